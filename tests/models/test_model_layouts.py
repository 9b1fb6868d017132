"""Model names and checkpoint layouts, on tiny checkpoints built here (no download): one safetensors file,
sharded safetensors, pytorch_model.bin, sharded .bin; generation_config.json (alignment heads, suppress
list, token ids checked); short Whisper names through a --model_dir hub cache, offline."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from whisper_helpers import TINY, hf_whisper

from unique_asr.errors import ModelError
from unique_asr.model_names import WHISPER_NAMES, default_alignment_heads, known_alignment_heads
from unique_asr.models import loader, registry
from unique_asr.models.hf_folder import generation_fields
from unique_asr.models.tokenizer import WhisperTokenizer


def _logits(model, mel, tokens):
    with torch.no_grad():
        return model.forward_train(mel, tokens)


def _folder(tmp_path, layout: str, seed: int = 3):
    hf = hf_whisper(TINY, seed=seed)
    folder = tmp_path / f"whisper-{layout}"
    if layout == "safetensors":
        hf.save_pretrained(folder)
    elif layout == "sharded-safetensors":
        hf.save_pretrained(folder, max_shard_size="100KB")
        assert (folder / "model.safetensors.index.json").is_file() and not (folder / "model.safetensors").exists()
    else:
        hf.save_pretrained(folder)
        os.remove(folder / "model.safetensors")
        state = hf.state_dict()
        if layout == "bin":
            torch.save(state, folder / "pytorch_model.bin")
        else:  # sharded-bin: two shards and the index transformers writes for them
            names = sorted(state)
            halves = {"pytorch_model-00001-of-00002.bin": names[: len(names) // 2],
                      "pytorch_model-00002-of-00002.bin": names[len(names) // 2:]}
            for shard, keys in halves.items():
                torch.save({k: state[k].clone() for k in keys}, folder / shard)
            index = {"metadata": {}, "weight_map": {k: shard for shard, keys in halves.items() for k in keys}}
            (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    shutil.copy(registry.BUNDLED["tiny.en"].tokenizer.locate(), folder / "tokenizer.json")
    return hf, folder


@pytest.mark.parametrize("layout", ["safetensors", "sharded-safetensors", "bin", "sharded-bin"])
def test_every_layout_loads_the_same_model(tmp_path, layout):
    hf, folder = _folder(tmp_path, layout)
    model, _, info = loader.load_whisper(str(folder))
    assert info.source == "folder" and info.config == TINY
    assert info.alignment_heads == default_alignment_heads(TINY.n_text_layer, TINY.n_text_head)
    mel, tokens = torch.randn(1, TINY.n_mels, 2 * TINY.n_audio_ctx), torch.randint(0, TINY.n_vocab, (1, 5))
    ref = hf(input_features=mel, decoder_input_ids=tokens).logits.detach()
    torch.testing.assert_close(_logits(model, mel, tokens), ref, atol=2e-4, rtol=2e-4)


def test_missing_shard_is_a_model_error(tmp_path):
    _, folder = _folder(tmp_path, "sharded-safetensors")
    shard = sorted(folder.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(ModelError, match=f"shard {shard.name} listed in model.safetensors.index.json is missing"):
        loader.load_whisper(str(folder))


def test_generation_config_is_read_and_checked(tmp_path):
    _, folder = _folder(tmp_path, "safetensors")
    tokenizer = WhisperTokenizer(str(folder / "tokenizer.json"), TINY.n_vocab)
    fields = generation_fields(tokenizer, TINY, alignment_heads=[(1, 2), (1, 3)])
    fields["suppress_tokens"] = [7, 11, 5]
    (folder / "generation_config.json").write_text(json.dumps(fields))
    _, loaded_tokenizer, info = loader.load_whisper(str(folder))
    assert info.alignment_heads == ((1, 2), (1, 3))
    assert loaded_tokenizer.non_speech_tokens == (5, 7, 11)  # what suppress_tokens=-1 now suppresses

    (folder / "generation_config.json").write_text(json.dumps(dict(fields, alignment_heads=[[2, 0]])))
    with pytest.raises(ModelError, match=r"alignment head \(2, 0\) outside the decoder's 2 layers x 4 heads"):
        loader.load_whisper(str(folder))


def test_generation_config_of_another_tokenizer_is_not_applied(tmp_path, caplog):
    _, folder = _folder(tmp_path, "safetensors")  # save_pretrained wrote placeholder ids (start token 1)
    fields = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps(dict(fields, suppress_tokens=[7])))
    _, tokenizer, _ = loader.load_whisper(str(folder))
    assert "decoder_start_token_id is 1, the tokenizer's is 50257" in caplog.text
    assert tokenizer.non_speech_tokens != (7,)


def test_short_names_map_to_hub_ids_and_published_heads():
    expected = {"tiny": "openai/whisper-tiny", "small.en": "openai/whisper-small.en",
                "large-v3": "openai/whisper-large-v3", "large": "openai/whisper-large-v3",
                "turbo": "openai/whisper-large-v3-turbo", "distil-large-v3": "distil-whisper/distil-large-v3"}
    for name, hub_id in expected.items():
        source = registry.resolve(name)
        assert (source.kind, source.name, source.location) == ("hub", name, hub_id)
    assert registry.resolve("tiny.en").kind == registry.resolve("base").kind == "bundled"  # offline stays offline
    dims = {"tiny": (4, 6), "base": (6, 8), "small": (12, 12), "medium": (24, 16), "large": (32, 20),
            "turbo": (4, 20)}
    for name, entry in WHISPER_NAMES.items():
        if entry.alignment_heads is None:
            assert name.startswith("distil-")
            continue
        family = "turbo" if "turbo" in name else name.split(".")[0].split("-")[0]
        layers, heads = dims[family]
        assert all(0 <= layer < layers and 0 <= head < heads for layer, head in entry.alignment_heads), name
    assert known_alignment_heads("openai/whisper-base") == known_alignment_heads("base")
    assert known_alignment_heads("base")[:2] == ((3, 1), (4, 2))


def test_short_name_loads_offline_from_model_dir_hub_cache(tmp_path, monkeypatch):
    """`--model tiny --model_dir D`: the hub id's snapshot in D (huggingface_hub's cache layout) is used."""
    import huggingface_hub.constants

    hf, folder = _folder(tmp_path, "sharded-safetensors")
    tokenizer = WhisperTokenizer(str(folder / "tokenizer.json"), TINY.n_vocab)
    (folder / "generation_config.json").write_text(json.dumps(generation_fields(tokenizer, TINY, [(1, 1)])))
    model_dir = tmp_path / "models"
    repo = model_dir / "models--openai--whisper-tiny"
    revision = "0" * 40
    shutil.copytree(folder, repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model, _, info = loader.load_whisper("tiny", model_dir=str(model_dir))
    assert (info.source, info.name, info.alignment_heads) == ("hub", "tiny", ((1, 1),))
    mel, tokens = torch.randn(1, TINY.n_mels, 2 * TINY.n_audio_ctx), torch.randint(0, TINY.n_vocab, (1, 5))
    ref = hf(input_features=mel, decoder_input_ids=tokens).logits.detach()
    torch.testing.assert_close(_logits(model, mel, tokens), ref, atol=2e-4, rtol=2e-4)
    with pytest.raises(ModelError, match="openai/whisper-small: cannot fetch"):
        loader.load_whisper("small", model_dir=str(model_dir))


def test_bundled_conversion_goes_to_model_dir(tmp_path):
    _, _, info = loader.load_whisper("tiny.en", model_dir=str(tmp_path))
    assert info.converted and info.weights.startswith(str(tmp_path))
    assert info.alignment_heads == known_alignment_heads("tiny.en")
    assert loader.load_whisper("tiny.en", model_dir=str(tmp_path))[2].converted is False
