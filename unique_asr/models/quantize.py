"""int8 weights on the CPU: every nn.Linear of the model becomes torch's dynamically quantized Linear (int8
weights per output channel, activations quantized per call, int8 GEMM through FBGEMM/oneDNN). The token
embedding (also the logits projection), convolutions and layer norms stay float32."""

from __future__ import annotations

import warnings

import torch
from torch import nn


def quantize_int8(model: nn.Module) -> nn.Module:
    """In place; returns the model. CPU only (torch's quantized Linear kernels are CPU kernels)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao.quantization is deprecated for torchao
        torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return model
