"""int8 weights on the CPU: every nn.Linear of the model becomes an `Int8Linear` (int8 weights with one scale
per output channel, int8 GEMM through FBGEMM's dynamic Linear, activations quantized on each call), and so does a
Whisper decoder's logits projection (its tied token embedding, used as a Linear: at base it is 26.6 M of the
decoder's 50 M weights per token step, so leaving it float32 read four times the bytes there).
The token embedding lookup, convolutions and layer norms stay float32.

Activations: FBGEMM's dynamic Linear quantizes its whole input with one scale (per tensor, 7-bit range on AVX2
CPUs). The encoder's Linears get one scale per row instead (each row divided by its max |x| before the int8
GEMM, its output multiplied back): an encoder window is 1500 frame rows of very different magnitudes, and with
one scale the quiet frames keep only a few levels. The decoder keeps per-tensor scales: per-row ones there
(rows: one per sequence of the batch) gain little alone and nothing on top of the encoder's (table), while
its many small calls pay the three extra ops most.
Measured (base int8, batch 8, 2 threads, timestamps off, both dev long-form files, errors of 877 / 3168 words;
a scratch ablation of this module, code 7ae103f):

| activation scales | LibriSpeech | LJ Speech |
|---|---|---|
| per tensor everywhere | 132 | 132 |
| per row in the decoder only | 131 | 122 |
| per row in the encoder only (this module) | 107 | 113 |
| per row everywhere | 111 | 115 |
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

# a row of zeros stays zeros (0 / eps * eps) instead of becoming NaN
_EPS = 1e-12


class Int8Linear(nn.Module):
    """y = x @ W.T + b with W int8 per output channel and x quantized per tensor, or per row (per_row). CPU only.

    Per-row scaling costs three elementwise ops per call (~15 % of a 3000-row encoder Linear's time, ~30 µs on
    an 8-row decoder one; 2 threads); a single row already has its own scale, so it skips them."""

    def __init__(self, linear: nn.Linear, per_row: bool = False):
        super().__init__()
        self.per_row = per_row
        weight = linear.weight.detach().float()
        with warnings.catch_warnings():
            # torch.ao.quantization and quantized tensors are deprecated in favour of torchao (not a dependency);
            # the pinned torch still ships FBGEMM's int8 kernels, which this module calls
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            observer = torch.ao.quantization.per_channel_dynamic_qconfig.weight()  # torch's per-channel int8
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
        if not self.per_row or x.numel() == x.shape[-1]:  # one row: the per-tensor scale is the row's scale
            y = torch.ops.quantized.linear_dynamic(x, self._packed, True)
            return y if self.bias is None else y.add_(self.bias)
        s = x.abs().amax(-1, keepdim=True).clamp_min_(_EPS)
        y = torch.ops.quantized.linear_dynamic(x / s, self._packed, True)
        return y.mul_(s) if self.bias is None else torch.addcmul(self.bias, y, s)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"per_row={self.per_row}")


def _replace_linears(module: nn.Module, per_row: bool) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child, per_row))
        else:
            _replace_linears(child, per_row)


def _fuse(attention: nn.Module, names: str, per_row: bool) -> None:
    """Projections of one input (q, k, v of a self-attention; k, v of a cross-attention) as one Int8Linear
    `<names>_int8` whose output holds theirs side by side; the separate Linears are removed. Each output channel
    has its own weight scale and all share the input's quantization, so the outputs equal the separate ones;
    the input is scaled and quantized once instead of per projection."""
    linears = [getattr(attention, name) for name in names]
    fused = nn.Linear(linears[0].in_features, sum(linear.out_features for linear in linears))
    with torch.no_grad():
        fused.weight.copy_(torch.cat([linear.weight for linear in linears]))
        fused.bias.copy_(torch.cat([linear.bias if linear.bias is not None else torch.zeros(linear.out_features)
                                    for linear in linears]))
    setattr(attention, f"{names}_int8", Int8Linear(fused, per_row))
    for name in names:
        delattr(attention, name)


# Which parts quantize their activations per row (module docstring); everything else is per tensor.
PER_ROW = {"encoder": True, "decoder": False}


def _fuse_attention(part: nn.Module, per_row: bool) -> None:
    """Whisper's attentions in one part (`Attention.qkv` / `.kv` use the fused modules)."""
    for block in getattr(part, "blocks", ()):
        for name, names in (("attn", "qkv"), ("self_attn", "qkv"), ("cross_attn", "kv")):
            attention = getattr(block, name, None)
            if attention is not None and all(isinstance(getattr(attention, n, None), nn.Linear) for n in names):
                _fuse(attention, names, per_row)


def quantize_int8(model: nn.Module) -> nn.Module:
    """In place; returns the model. CPU only (FBGEMM's quantized Linear kernels are CPU kernels). The Linears
    of `model.encoder` quantize their activations per row, all others per tensor (PER_ROW). Whisper's
    projections of one input are fused (`_fuse`). A decoder with a tied token embedding (`decoder.tok_emb`)
    gets `decoder.logits_int8`, an int8 Linear of the same weights, which WhisperModel._logits uses."""
    for name, per_row in PER_ROW.items():
        part = getattr(model, name, None)
        if isinstance(part, nn.Module):
            _fuse_attention(part, per_row)
            _replace_linears(part, per_row)
    _replace_linears(model, per_row=False)  # what no part holds (e.g. a speech-LLM's projector and LLM)
    embedding = getattr(getattr(model, "decoder", None), "tok_emb", None)
    if isinstance(embedding, nn.Embedding):
        vocab, width = embedding.weight.shape
        projection = nn.Linear(width, vocab, bias=False)
        projection.weight = nn.Parameter(embedding.weight.detach().float(), requires_grad=False)
        model.decoder.logits_int8 = Int8Linear(projection)
    return model
