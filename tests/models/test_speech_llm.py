"""Speech-LLM: our logits == transformers' Qwen2AudioForConditionalGeneration / VoxtralForConditionalGeneration
on tiny random configs built locally (weights mapped by name, same input_features and text ids, audio tokens in
the same places), prefill and teacher-forced decode steps; our own checkpoint format; composing a model from a
Whisper encoder and an LLM."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from unique_asr.config import SparsityConfig
from unique_asr.errors import ModelError
from unique_asr.models.llm import LLM, LLMConfig, allocate_cache
from unique_asr.models.speech_llm import ProjectorConfig, SpeechLLM
from unique_asr.models.speech_llm_checkpoint import (
    compose,
    from_hf_state_dict,
    load_hf_speech_llm,
    load_speech_llm,
    save_speech_llm,
)
from unique_asr.models.whisper import WhisperConfig, WhisperModel

AUDIO_ID, CTX = 5, 16
ENC = dict(num_mel_bins=80, max_source_positions=CTX)
TEXT = dict(vocab_size=61, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=12, max_position_embeddings=256)


def _perturb(model: torch.nn.Module) -> None:
    with torch.no_grad():  # random init leaves biases at zero and norms at one
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.2 * torch.randn_like(p))


def hf_qwen2_audio(seed: int):
    torch.manual_seed(seed)
    config = tf.Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder", d_model=32, encoder_layers=2, encoder_attention_heads=4,
                          encoder_ffn_dim=128, **ENC),
        text_config=dict(model_type="qwen2", **TEXT), audio_token_index=AUDIO_ID)
    config._attn_implementation = "eager"
    model = tf.Qwen2AudioForConditionalGeneration(config)
    _perturb(model)
    return model.eval()


def hf_voxtral(seed: int):
    torch.manual_seed(seed)
    config = tf.VoxtralConfig(
        audio_config=dict(model_type="voxtral_encoder", hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=128, **ENC),
        text_config=dict(model_type="llama", **TEXT), audio_token_id=AUDIO_ID)
    config._attn_implementation = "eager"
    model = tf.VoxtralForConditionalGeneration(config)
    _perturb(model)
    return model.eval()


def prompt(n_audio: int, batch: int) -> torch.Tensor:
    """ids [B, 3 + n_audio + 4]: text, n_audio placeholders, text (placeholder id never drawn as text)."""
    text = torch.randint(AUDIO_ID + 1, TEXT["vocab_size"], (batch, 7))
    return torch.cat([text[:, :3], torch.full((batch, n_audio), AUDIO_ID), text[:, 3:]], dim=1)


def run_ours(model: SpeechLLM, ids, mel, steps, sparsity) -> torch.Tensor:
    """Prefill the prompt with its audio, then decode steps [B, n] one at a time: logits [B, T + n, V]."""
    B, T = ids.shape
    llm = model.llm
    cache = allocate_cache(llm.config, sparsity, batch=B, num_pages=64)
    positions = torch.zeros(B, dtype=torch.int64)
    x = model.embed(ids, model.audio_embeddings(mel).flatten(0, 1))
    out = [llm.logits(llm.prefill(x, cache, positions))]
    positions += T
    for j in range(steps.shape[1]):
        out.append(llm.logits(llm.decode_step(llm.embed_tokens(steps[:, j]), cache, positions, sparsity))[:, None])
        positions += 1
    return torch.cat(out, dim=1)


def run_hf(hf, ids, mel, steps, **audio_kwargs) -> torch.Tensor:
    cache = tf.DynamicCache(config=hf.config.text_config)
    out = [hf(input_ids=ids, input_features=mel, past_key_values=cache, use_cache=True, **audio_kwargs).logits]
    for j in range(steps.shape[1]):
        out.append(hf(input_ids=steps[:, j:j + 1], past_key_values=cache, use_cache=True).logits)
    return torch.cat(out, dim=1).float()


def ours_from(hf) -> SpeechLLM:
    config, state = from_hf_state_dict(hf.state_dict(), hf.config)
    model = SpeechLLM(config).eval()
    model.load_state_dict(state)
    return model


def _seed() -> int:
    return int(torch.randint(0, 2**31 - 1, ()))


@torch.no_grad()
def test_qwen2_audio_parity():
    hf = hf_qwen2_audio(_seed())
    ours = ours_from(hf)
    assert ours.config.projector == ProjectorConfig("pool", 2) and ours.config.tokens_per_window == CTX // 2
    mel = torch.randn(2, 80, 2 * CTX)
    ids, steps = prompt(CTX // 2, batch=2), torch.randint(0, TEXT["vocab_size"], (2, 4))
    ref = run_hf(hf, ids, mel, steps, feature_attention_mask=torch.ones(2, 2 * CTX, dtype=torch.long))
    for sparsity in (SparsityConfig(mode="dense", page_size=4, budget=4),
                     SparsityConfig(mode="unique", page_size=4, budget=64)):
        torch.testing.assert_close(run_ours(ours, ids, mel, steps, sparsity), ref, atol=3e-4, rtol=1e-4)


@torch.no_grad()
def test_voxtral_parity_two_windows():
    hf = hf_voxtral(_seed())
    ours = ours_from(hf)
    assert ours.config.projector == ProjectorConfig("stack", 4, "gelu")
    mel = torch.randn(2, 80, 2 * CTX)  # two 30 s-style windows of one recording, their tokens back to back
    ids, steps = prompt(2 * CTX // 4, batch=1), torch.randint(0, TEXT["vocab_size"], (1, 4))
    ref = run_hf(hf, ids, mel, steps)
    for sparsity in (SparsityConfig(mode="dense", page_size=4, budget=4),
                     SparsityConfig(mode="quest", page_size=4, budget=64)):
        torch.testing.assert_close(run_ours(ours, ids, mel, steps, sparsity), ref, atol=3e-4, rtol=1e-4)


@torch.no_grad()
def test_hf_folder_and_own_format_round_trip(tmp_path):
    hf = hf_voxtral(_seed())
    hf.save_pretrained(tmp_path / "hf")
    ours = load_hf_speech_llm(str(tmp_path / "hf"))
    mel, ids = torch.randn(1, 80, 2 * CTX), prompt(CTX // 4, batch=1)
    steps, sparsity = torch.randint(0, 61, (1, 2)), SparsityConfig(page_size=4, budget=4)
    ref = run_hf(hf, ids, mel, steps)
    torch.testing.assert_close(run_ours(ours, ids, mel, steps, sparsity), ref, atol=3e-4, rtol=1e-4)
    save_speech_llm(ours, str(tmp_path / "ours"))
    again = load_speech_llm(str(tmp_path / "ours"))
    assert again.config == ours.config
    torch.testing.assert_close(run_ours(again, ids, mel, steps, sparsity), run_ours(ours, ids, mel, steps, sparsity))
    (tmp_path / "ours" / "config.json").write_text('{"format": "something-else"}')
    with pytest.raises(ModelError):
        load_speech_llm(str(tmp_path / "ours"))


@torch.no_grad()
def test_compose_from_whisper_encoder_and_tied_llm(tmp_path):
    torch.manual_seed(_seed())
    wcfg = WhisperConfig(n_mels=80, n_audio_ctx=CTX, n_audio_state=32, n_audio_head=4, n_audio_layer=1, n_vocab=50,
                         n_text_ctx=8, n_text_state=32, n_text_head=4, n_text_layer=1)
    whisper = WhisperModel(wcfg)
    _perturb(whisper)
    llm = LLM(LLMConfig(vocab_size=40, hidden_size=24, intermediate_size=40, num_layers=1, num_heads=2,
                        num_kv_heads=1, head_dim=12, tie_word_embeddings=True))
    model = compose(whisper.state_dict(), wcfg, llm, ProjectorConfig("stack", 2, "silu"), audio_token_id=3).eval()
    mel = torch.randn(1, 80, 2 * CTX)
    frames = model.audio(mel)
    torch.testing.assert_close(frames, whisper.encode(mel))
    assert model.audio_embeddings(mel).shape == (1, CTX // 2, 24)
    save_speech_llm(model, str(tmp_path))
    again = load_speech_llm(str(tmp_path))
    assert again.llm.lm_head.weight.data_ptr() == again.llm.embed_tokens.weight.data_ptr()
    pooled = compose(whisper.state_dict(), wcfg, llm, ProjectorConfig("pool", 2), audio_token_id=3).eval()
    pre = pooled.audio(mel)  # the pool projector reads pre-norm frames; Whisper's final norm moved after pooling
    torch.testing.assert_close(pooled.projector.norm(pre), whisper.encode(mel))
    pooled_pre = torch.nn.functional.avg_pool1d(pre.transpose(1, 2), 2, 2).transpose(1, 2)
    expected = pooled.projector.linear(pooled.projector.norm(pooled_pre))
    torch.testing.assert_close(pooled.audio_embeddings(mel), expected)
    ids = torch.tensor([[1, 2] + [3] * (CTX // 2) + [7]])
    sparsity = SparsityConfig(page_size=4, budget=4)
    torch.testing.assert_close(run_ours(again, ids, mel, ids[:, :1], sparsity),
                               run_ours(model, ids, mel, ids[:, :1], sparsity))


def test_placeholder_count_must_match_audio():
    model = SpeechLLM(ours_from(hf_voxtral(0)).config)
    with pytest.raises(ValueError, match="placeholders"):
        model.embed(prompt(3, batch=1), torch.zeros(4, TEXT["hidden_size"]))
