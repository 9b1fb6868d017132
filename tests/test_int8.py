"""int8 weights on the CPU (dtype="int8": dynamic int8 Linear layers) and the thread count option."""

from __future__ import annotations

import warnings

import pytest
import torch
from speech_data import AUSTEN, clip, text, wer

import unique_asr
from unique_asr.api import resolve_dtype
from unique_asr.models.quantize import Int8Linear


def test_int8_model_quantizes_every_linear_and_keeps_the_text():
    fp32 = unique_asr.load_model("tiny.en", device="cpu", dtype="float32")
    int8 = unique_asr.load_model("tiny.en", device="cpu", dtype="int8")
    linears = [m for m in int8.bundle.model.modules() if isinstance(m, torch.nn.Linear)]
    quantized = [m for m in int8.bundle.model.modules() if isinstance(m, Int8Linear)]
    # every Linear, plus the logits projection over the tied token embedding, less the fused ones (q, k, v of
    # each self-attention in one, k, v of each cross-attention in one)
    config = fp32.bundle.model.config
    fused_away = 2 * (config.n_audio_layer + config.n_text_layer) + config.n_text_layer
    separate = sum(1 for m in fp32.bundle.model.modules() if isinstance(m, torch.nn.Linear))
    assert not linears and len(quantized) == 1 + separate - fused_away
    # activations per row in the encoder (frames of very different magnitudes), per tensor elsewhere
    assert {m.per_row for m in int8.bundle.model.encoder.modules() if isinstance(m, Int8Linear)} == {True}
    assert {m.per_row for m in int8.bundle.model.decoder.modules() if isinstance(m, Int8Linear)} == {False}
    h = torch.randn(2, 1, fp32.bundle.model.config.n_text_state)
    with torch.inference_mode():
        exact, approx = fp32.bundle.model._logits(h), int8.bundle.model._logits(h)
    assert approx.shape == exact.shape and approx.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(approx.flatten(1), exact.flatten(1)).min() > 0.99
    names = AUSTEN[:2]
    for name in names:
        ours = " ".join(s.text for s in int8.transcribe(clip(name))[0])
        base = " ".join(s.text for s in fp32.transcribe(clip(name))[0])
        assert wer(ours, text(name)) <= wer(base, text(name)) + 0.1, (ours, base)


def test_int8_linear_quantizes_activations_per_row():
    """Rows of very different magnitudes (an 8-row decoder step, an encoder window's frames) each keep their
    precision: per-tensor activation quantization (FBGEMM's dynamic Linear) loses the small rows."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 96)
    int8 = Int8Linear(linear, per_row=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated for torchao
        per_tensor = torch.ao.quantization.quantize_dynamic(
            torch.nn.Sequential(linear), {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig},
            dtype=torch.qint8)[0]
    # the same int8 weights and per-channel scales as torch's dynamic quantization
    assert torch.equal(int8.weight().int_repr(), per_tensor.weight().int_repr())
    assert torch.equal(int8.weight().q_per_channel_scales(), per_tensor.weight().q_per_channel_scales())
    x = torch.randn(4, 3, 256) * torch.logspace(-3, 1, 4)[:, None, None]
    with torch.inference_mode():
        exact, ours, theirs = linear(x), int8(x), per_tensor(x)
        row = int8(x[:1, :1])  # a single row takes the unscaled path
    def error(y: torch.Tensor) -> float:  # the worst row's relative error
        return ((y - exact).norm(dim=-1) / exact.norm(dim=-1)).max().item()

    assert ours.shape == exact.shape and error(ours) < 0.03 and error(theirs) > 0.3
    int8.per_row = False  # per tensor: FBGEMM's dynamic Linear
    torch.testing.assert_close(int8(x), theirs)
    torch.testing.assert_close(row, per_tensor(x[:1, :1]))
    assert torch.equal(int8(torch.zeros(2, 256)), linear.bias.detach().expand(2, -1))  # zero rows: no NaN


def test_fused_projections_equal_the_separate_ones():
    """q, k, v quantized as one Int8Linear give the outputs of three: per-channel weight scales, one input
    quantization, exact int32 sums. Encoder attention (per-row activations) and decoder self-attention
    (per tensor)."""
    from unique_asr.models.quantize import quantize_int8
    from unique_asr.models.whisper import Attention

    torch.manual_seed(0)
    for part, name, per_row in (("encoder", "attn", True), ("decoder", "self_attn", False)):
        attention = Attention(64, 4)
        separate = {n: Int8Linear(getattr(attention, n), per_row) for n in "qkv"}
        block = torch.nn.Module()
        setattr(block, name, attention)
        holder = torch.nn.Module()
        setattr(holder, part, torch.nn.Module())
        getattr(holder, part).blocks = torch.nn.ModuleList([block])
        quantize_int8(holder)
        assert not hasattr(attention, "q") and attention.qkv_int8.per_row == per_row
        x = torch.randn(3, 5, 64) * torch.logspace(-2, 1, 3)[:, None, None]
        with torch.inference_mode():
            for projection, got in zip("qkv", attention.qkv(x)):
                assert torch.equal(got, attention.split(separate[projection](x))), (part, projection)


def test_int8_is_cpu_only():
    with pytest.raises(ValueError, match="CPU only"):
        resolve_dtype("int8", torch.device("cuda"))
    with pytest.raises(ValueError):
        unique_asr.TranscribeOptions(dtype="int8", device="cuda")


def test_threads_option_sets_torch_threads():
    before = torch.get_num_threads()
    model = unique_asr.load_model("tiny.en", device="cpu")
    try:
        segments, _ = model.transcribe(clip(AUSTEN[0]), threads=1)
        list(segments)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="threads must be >= 0"):
        unique_asr.TranscribeOptions(threads=-1)
