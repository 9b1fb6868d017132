"""int8 weights on the CPU: every nn.Linear of the model becomes an `Int8Linear` (int8 weights with one scale
per output channel, int8 GEMM through FBGEMM's dynamic Linear, activations quantized per row), and so does a
Whisper decoder's logits projection (its tied token embedding, used as a Linear: at base it is 26.6 M of the
decoder's 50 M weights per token step, so leaving it float32 read four times the bytes there).
The token embedding lookup, convolutions and layer norms stay float32.

Why per-row activations: FBGEMM's dynamic Linear quantizes its whole input with one scale (per tensor, 7-bit
range on AVX2 CPUs). A decoder step's input holds one row per sequence of the batch and an encoder window's one
row per frame; rows of small magnitude then keep only a few levels. CTranslate2 (faster-whisper) quantizes per
row. Measured (base int8, batch 8, 2 threads, timestamps off, LibriSpeech dev long-form, code 343c258): per
tensor 130 errors of 877, per row 117, faster-whisper int8 on the same weights 125. Each row is divided by its
max |x| before the int8 GEMM (so the per-tensor scale becomes a per-row one) and its output multiplied back;
the bias is added after, in the same fused multiply-add.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

# a row of zeros stays zeros (0 / eps * eps) instead of becoming NaN
_EPS = 1e-12


class Int8Linear(nn.Module):
    """y = x @ W.T + b with W int8 per output channel and x quantized per row. CPU only.

    The scaling costs three elementwise ops per call: ~30 µs on an 8-row base decoder Linear (512 -> 512, 67 ->
    98 µs, 2 threads) and ~15 % on a 3000-row encoder one; a single row (batch-1 greedy decoding) already has a
    per-row scale, so it skips them (BENCHMARKS.md, "per-row activation scales")."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao.quantization is deprecated for torchao
            warnings.simplefilter("ignore", UserWarning)
            observer = torch.ao.quantization.per_channel_dynamic_qconfig.weight()
        weight = linear.weight.detach().float()
        observer(weight)
        scale, zero_point = observer.calculate_qparams()
        qweight = torch.quantize_per_channel(weight, scale.double(), zero_point.long(), 0, torch.qint8)
        self._packed = torch.ops.quantized.linear_prepack(qweight, None)
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("bias", bias, persistent=False)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def weight(self) -> torch.Tensor:
        """The int8 weight (a quantized tensor, per-channel scales)."""
        return torch.ops.quantized.linear_unpack(self._packed)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == x.shape[-1]:  # one row: the per-tensor scale is the row's scale
            y = torch.ops.quantized.linear_dynamic(x, self._packed, True)
            return y if self.bias is None else y.add_(self.bias)
        s = x.abs().amax(-1, keepdim=True).clamp_min_(_EPS)
        y = torch.ops.quantized.linear_dynamic(x / s, self._packed, True)
        return y.mul_(s) if self.bias is None else torch.addcmul(self.bias, y, s)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def _replace_linears(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child))
        else:
            _replace_linears(child)


def quantize_int8(model: nn.Module) -> nn.Module:
    """In place; returns the model. CPU only (FBGEMM's quantized Linear kernels are CPU kernels). A decoder
    with a tied token embedding (`decoder.tok_emb`) gets `decoder.logits_int8`, an int8 Linear of the same
    weights, which WhisperModel._logits uses."""
    _replace_linears(model)
    embedding = getattr(getattr(model, "decoder", None), "tok_emb", None)
    if isinstance(embedding, nn.Embedding):
        vocab, width = embedding.weight.shape
        projection = nn.Linear(width, vocab, bias=False)
        projection.weight = nn.Parameter(embedding.weight.detach().float(), requires_grad=False)
        model.decoder.logits_int8 = Int8Linear(projection)
    return model
