"""PyTorch twins of the fused step kernels (the spec; the CPU path)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def add_rms_norm_naive(x: torch.Tensor | None, residual: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """residual += x (in place, in residual's dtype; x None: no add; x [S, M, d]: fp32 partials, their sum
    added), then RMSNorm of residual (fp32 math) times weight, in residual's dtype: [M, d]."""
    if x is not None:
        residual.copy_(residual.float() + (x.float().sum(0) if x.dim() == 3 else x.float()))
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


def rotary_sum_naive(partials: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor, heads: int,
                     head_dim: int, dtype: torch.dtype) -> torch.Tensor:
    """partials [S, M, W] (fp32) summed into `dtype` [M, W], then its first `heads` heads rotated as `rotary_naive`
    (the sum rotated in fp32, rounded once)."""
    total = partials.float().sum(0)
    rotary_naive(total, positions, inv_freq, heads, head_dim)
    return total.to(dtype)


def skinny_linear_naive(x: torch.Tensor, weight: torch.Tensor, config, silu: bool = False) -> torch.Tensor:
    """The contract of `skinny.skinny_linear`: x [M, K] (silu: [M, 2K] = [gate | up], silu(gate) * up rounded to
    x's dtype first) @ weight [N, K].T in fp32; config.split == 1: [M, N] in x's dtype, else the fp32 partial sums
    [split, M, N] of `split` consecutive K-slices."""
    a = silu_mul_naive(x) if silu else x
    K = weight.shape[1]
    slices = [a[:, s:s + K // config.split].float() @ weight[:, s:s + K // config.split].float().T
              for s in range(0, K, K // config.split)]
    return slices[0].to(x.dtype) if config.split == 1 else torch.stack(slices)
