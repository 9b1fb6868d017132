"""PyTorch twins of the fused step kernels (the spec; the CPU path)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def add_rms_norm_naive(x: torch.Tensor | None, residual: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """residual += x (in place, in residual's dtype; x None: no add), then RMSNorm of residual (fp32 math) times
    weight, in residual's dtype: [M, d]."""
    if x is not None:
        residual.add_(x)
    r = residual.float()
    return (r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(residual.dtype)


def rotary_naive(qkv: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor, heads: int, head_dim: int) -> None:
    """Rotate, in place, the first `heads` heads of head_dim of every row of qkv [M, W] (q then k heads of a fused
    QKV output; half-split convention) by the angles positions[m] * inv_freq (fp32 math)."""
    x = qkv[:, : heads * head_dim].unflatten(-1, (heads, head_dim))
    angles = positions[:, None].float() * inv_freq  # [M, D/2]
    cos, sin = angles.cos()[:, None], angles.sin()[:, None]
    x1, x2 = x.float().chunk(2, dim=-1)
    x.copy_(torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1))


def silu_mul_naive(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up of gate_up [M, 2I] = [gate | up] (fp32 math) -> [M, I] in gate_up's dtype."""
    gate, up = gate_up.float().chunk(2, dim=-1)
    return (F.silu(gate) * up).to(gate_up.dtype)
