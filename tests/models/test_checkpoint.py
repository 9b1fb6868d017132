"""Weight formats: CTranslate2 model.bin (synthetic and bundled tiny.en), the conversion cache, HF folders."""

from __future__ import annotations

import dataclasses
import os
import shutil
import struct

import pytest
import torch
from whisper_helpers import TINY, hf_whisper

from unique_asr.errors import ModelError
from unique_asr.models import checkpoint, loader, registry
from unique_asr.models.checkpoint import convert_ct2
from unique_asr.models.ct2 import dequantize, read_ct2
from unique_asr.models.whisper import SelfAttentionCache, WhisperModel

_TYPE_IDS = {torch.float32: 0, torch.int8: 1, torch.int16: 2, torch.int32: 3, torch.float16: 4}


def write_ct2(path, variables: dict[str, torch.Tensor], aliases: dict[str, str]) -> None:
    """Minimal CTranslate2 model.bin writer (binary version 6), the layout read_ct2 parses."""

    def string(s: str) -> bytes:
        return struct.pack("<H", len(s) + 1) + s.encode() + b"\0"

    with open(path, "wb") as f:
        f.write(struct.pack("<I", 6) + string("WhisperSpec") + struct.pack("<II", 3, len(variables)))
        for name, t in variables.items():
            f.write(
                string(name) + struct.pack("<B", t.dim()) + b"".join(struct.pack("<I", d) for d in t.shape)
            )
            data = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            f.write(struct.pack("<BI", _TYPE_IDS[t.dtype], len(data)) + data)
        f.write(struct.pack("<I", len(aliases)))
        for alias, target in aliases.items():
            f.write(string(alias) + string(target))


def _quantize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = 127.0 / w.abs().amax(1).clamp_min(1e-8)
    return torch.round(w * scale[:, None]).to(torch.int8), scale


def ct2_from_hf(hf, int8: bool) -> dict[str, torch.Tensor]:
    """CTranslate2 WhisperSpec variables of a transformers Whisper: fused projections, optional int8."""
    sd = {k.removeprefix("model."): v.detach() for k, v in hf.state_dict().items()}
    out = {
        "encoder/num_heads": torch.tensor(TINY.n_audio_head, dtype=torch.int16),
        "decoder/num_heads": torch.tensor(TINY.n_text_head, dtype=torch.int16),
    }

    def linear(dst, srcs, bias=True):
        w = torch.cat([sd[f"{s}.weight"] for s in srcs])
        if int8:
            out[f"{dst}/weight"], out[f"{dst}/weight_scale"] = _quantize(w)
        else:
            out[f"{dst}/weight"] = w
        out[f"{dst}/bias"] = torch.cat(
            [sd.get(f"{s}.bias", torch.zeros(sd[f"{s}.weight"].shape[0])) for s in srcs]
        )

    def norm(dst, src):
        out[f"{dst}/gamma"], out[f"{dst}/beta"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    for c in ("conv1", "conv2"):
        out[f"encoder/{c}/weight"], out[f"encoder/{c}/bias"] = (
            sd[f"encoder.{c}.weight"],
            sd[f"encoder.{c}.bias"],
        )
    out["encoder/position_encodings/encodings"] = sd["encoder.embed_positions.weight"]
    out["decoder/position_encodings/encodings"] = sd["decoder.embed_positions.weight"]
    out["decoder/embeddings/weight"] = sd["decoder.embed_tokens.weight"]
    norm("encoder/layer_norm", "encoder.layer_norm")
    norm("decoder/layer_norm", "decoder.layer_norm")
    for side, n in (("encoder", TINY.n_audio_layer), ("decoder", TINY.n_text_layer)):
        for i in range(n):
            s, d = f"{side}.layers.{i}", f"{side}/layer_{i}"
            norm(f"{d}/self_attention/layer_norm", f"{s}.self_attn_layer_norm")
            linear(f"{d}/self_attention/linear_0", [f"{s}.self_attn.{p}_proj" for p in "qkv"])
            linear(f"{d}/self_attention/linear_1", [f"{s}.self_attn.out_proj"])
            norm(f"{d}/ffn/layer_norm", f"{s}.final_layer_norm")
            linear(f"{d}/ffn/linear_0", [f"{s}.fc1"])
            linear(f"{d}/ffn/linear_1", [f"{s}.fc2"])
            if side == "decoder":
                norm(f"{d}/attention/layer_norm", f"{s}.encoder_attn_layer_norm")
                linear(f"{d}/attention/linear_0", [f"{s}.encoder_attn.q_proj"])
                linear(f"{d}/attention/linear_1", [f"{s}.encoder_attn.k_proj", f"{s}.encoder_attn.v_proj"])
                linear(f"{d}/attention/linear_2", [f"{s}.encoder_attn.out_proj"])
    return out


@torch.no_grad()
def _logits(model, mel, tokens):
    cross = model.cross_memory(model.encode(mel))
    return model.decode(tokens, SelfAttentionCache.allocate(model.config, mel.shape[0], 16), cross)


@pytest.mark.parametrize("int8", [False, True])
def test_ct2_conversion_matches_transformers(tmp_path, int8):
    hf = hf_whisper(TINY, seed=int(torch.randint(0, 2**31 - 1, ()).item()))
    path = str(tmp_path / "model.bin")
    variables = ct2_from_hf(hf, int8)
    write_ct2(path, variables, {"decoder/projection/weight": "decoder/embeddings/weight"})
    parsed = read_ct2(path)
    assert parsed.spec == "WhisperSpec" and parsed.revision == 3
    assert parsed.variables["decoder/projection/weight"] is parsed.variables["decoder/embeddings/weight"]
    config, state = convert_ct2(parsed)
    assert config == TINY
    model = WhisperModel(config).eval()
    model.load_state_dict(state, strict=True)
    mel, tokens = torch.randn(1, TINY.n_mels, 2 * TINY.n_audio_ctx), torch.randint(0, TINY.n_vocab, (1, 6))
    ref = hf(input_features=mel, decoder_input_ids=tokens).logits.detach()
    tol = dict(atol=0.15, rtol=0.05) if int8 else dict(atol=2e-4, rtol=2e-4)
    torch.testing.assert_close(_logits(model, mel, tokens), ref, **tol)
    if int8:
        name = "decoder/layer_0/ffn/linear_0/weight"
        q, scale = variables[name], variables[f"{name}_scale"]
        torch.testing.assert_close(dequantize(parsed.variables, name), q.float() / scale[:, None])


def test_split_model_bin_reads_as_one(tmp_path):
    hf = hf_whisper(TINY, seed=0)
    whole = tmp_path / "model.bin"
    write_ct2(whole, ct2_from_hf(hf, False), {})
    data = whole.read_bytes()
    (tmp_path / "p1").write_bytes(data[:1000])
    (tmp_path / "p2").write_bytes(data[1000:])
    a, b = read_ct2(str(whole)).variables, read_ct2([str(tmp_path / "p1"), str(tmp_path / "p2")]).variables
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_corrupt_model_bin_raises_model_error(tmp_path):
    real = registry.BUNDLED["tiny.en"].weights[0].locate()
    cases = {
        "truncated.bin": open(real, "rb").read(1 << 20),
        "empty.bin": b"",
        "garbage.bin": os.urandom(4096),
        "text.bin": b"this is not a model\n" * 10,
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ModelError, match=name):
            read_ct2(str(path))
    with pytest.raises(ModelError, match="missing.bin"):
        read_ct2(str(tmp_path / "missing.bin"))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIQUE_ASR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_sha256_mismatch_refuses_to_convert(cache_dir, monkeypatch):
    good = registry.BUNDLED["tiny.en"]
    bad = dataclasses.replace(good, weights=(dataclasses.replace(good.weights[0], sha256="0" * 64),))
    monkeypatch.setitem(registry.BUNDLED, "tiny.en", bad)
    with pytest.raises(ModelError, match=r"model\.bin: sha256 mismatch"):
        loader.load_whisper("tiny.en")
    assert not (cache_dir / "whisper").exists() or not any((cache_dir / "whisper").rglob("*.safetensors"))


def test_conversion_cached_and_reused(cache_dir, monkeypatch):
    model, _, info = loader.load_whisper("tiny.en")
    assert info.converted and info.weights.startswith(str(cache_dir)) and os.path.isfile(info.weights)

    def no_conversion(*args, **kwargs):
        raise AssertionError("reconverted although the cache was complete")

    monkeypatch.setattr(loader, "read_ct2", no_conversion)
    again, _, info2 = loader.load_whisper("tiny.en")
    assert not info2.converted
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


@pytest.mark.parametrize("damage", ["model.safetensors", "config.json"])
def test_damaged_cache_is_reconverted(cache_dir, damage):
    first = loader.load_whisper("tiny.en")[0]
    path = os.path.join(loader.bundled_cache_dir(registry.BUNDLED["tiny.en"]), damage)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    model, _, info = loader.load_whisper("tiny.en")
    assert info.converted
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), model.state_dict().values()))


def test_interrupted_conversion_leaves_no_cache(cache_dir, monkeypatch):
    def crash(tensors, path):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        loader.load_whisper("tiny.en")
    folder = loader.bundled_cache_dir(registry.BUNDLED["tiny.en"])
    assert os.listdir(folder) == []
    monkeypatch.undo()
    monkeypatch.setenv("UNIQUE_ASR_CACHE", str(cache_dir))
    assert loader.load_whisper("tiny.en")[2].converted


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_local_hugging_face_folder(tmp_path, fmt):
    hf = hf_whisper(TINY, seed=1)
    folder = tmp_path / "my-whisper"
    hf.save_pretrained(folder)
    if fmt == "bin":
        torch.save(hf.state_dict(), folder / "pytorch_model.bin")
        os.remove(folder / "model.safetensors")
    shutil.copy(registry.BUNDLED["tiny.en"].tokenizer.locate(), folder / "tokenizer.json")
    model, tokenizer, info = loader.load_whisper(str(folder))
    assert (info.source, info.name, info.config) == ("folder", "my-whisper", TINY)
    mel, tokens = torch.randn(1, TINY.n_mels, 2 * TINY.n_audio_ctx), torch.randint(0, TINY.n_vocab, (1, 4))
    ref = hf(input_features=mel, decoder_input_ids=tokens).logits.detach()
    torch.testing.assert_close(_logits(model, mel, tokens), ref, atol=2e-4, rtol=2e-4)
    os.remove(folder / "tokenizer.json")
    with pytest.raises(ModelError, match="tokenizer.json"):
        loader.load_whisper(str(folder))


def test_hub_id_offline_is_a_model_error(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelError, match="openai/whisper-small: cannot fetch"):
        loader.load_whisper("openai/whisper-small")
