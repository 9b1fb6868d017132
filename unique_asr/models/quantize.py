"""int8 weights on the CPU: every nn.Linear of the model becomes torch's dynamically quantized Linear (int8
weights with one scale per output channel, activations quantized per call, int8 GEMM through FBGEMM), and so
does a Whisper decoder's logits projection (its tied token embedding, used as a Linear: at base it is 26.6 M
of the decoder's 50 M weights per token step, so leaving it float32 read four times the bytes there).
The token embedding lookup, convolutions and layer norms stay float32."""

from __future__ import annotations

import warnings

import torch
from torch import nn


def _quantize(module: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao.quantization is deprecated for torchao
        warnings.simplefilter("ignore", UserWarning)
        return torch.ao.quantization.quantize_dynamic(
            module, {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}, dtype=torch.qint8,
            inplace=True)


def quantize_int8(model: nn.Module) -> nn.Module:
    """In place; returns the model. CPU only (torch's quantized Linear kernels are CPU kernels). A decoder
    with a tied token embedding (`decoder.tok_emb`) gets `decoder.logits_int8`, an int8 Linear of the same
    weights, which WhisperModel._logits uses."""
    _quantize(model)
    embedding = getattr(getattr(model, "decoder", None), "tok_emb", None)
    if isinstance(embedding, nn.Embedding):
        vocab, width = embedding.weight.shape
        projection = nn.Linear(width, vocab, bias=False)
        projection.weight = nn.Parameter(embedding.weight.detach().float(), requires_grad=False)
        model.decoder.logits_int8 = _quantize(nn.Sequential(projection))[0]
    return model
