"""Triton kernels of the fused step pieces (contracts: `naive`). One program per row for the norm (d <= 8192
in one block), per (row, head) for rotary, per (row, block of columns) for silu_mul: each reads and writes its
bytes once."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _add_rms_norm_kernel(x_ptr, r_ptr, w_ptr, out_ptr, stride_x, stride_r, stride_o, d, eps,
                         HAS_X: tl.constexpr, BLOCK: tl.constexpr):
    m = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < d
    r = tl.load(r_ptr + m * stride_r + offs, mask=mask, other=0.0)
    if HAS_X:
        r = (r.to(tl.float32) + tl.load(x_ptr + m * stride_x + offs, mask=mask, other=0.0).to(tl.float32))
        r = r.to(r_ptr.dtype.element_ty)
        tl.store(r_ptr + m * stride_r + offs, r, mask=mask)
    rf = r.to(tl.float32)
    inv = 1.0 / tl.sqrt(tl.sum(rf * rf, axis=0) / d + eps)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + m * stride_o + offs, (rf * inv * w).to(out_ptr.dtype.element_ty), mask=mask)


def add_rms_norm(x: torch.Tensor | None, residual: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    M, d = residual.shape
    out = torch.empty_like(residual)
    _add_rms_norm_kernel[(M,)](residual if x is None else x, residual, weight, out,
                               0 if x is None else x.stride(0), residual.stride(0), out.stride(0), d, eps,
                               HAS_X=x is not None, BLOCK=triton.next_power_of_2(d))
    return out


@triton.jit
def _rotary_kernel(qkv_ptr, pos_ptr, freq_ptr, stride_m, HALF: tl.constexpr, BLOCK: tl.constexpr):
    m = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    offs = tl.arange(0, BLOCK)
    mask = offs < HALF
    angle = tl.load(pos_ptr + m).to(tl.float32) * tl.load(freq_ptr + offs, mask=mask, other=0.0)
    cos, sin = tl.cos(angle), tl.sin(angle)
    base = qkv_ptr + m * stride_m + h * (2 * HALF)
    x1 = tl.load(base + offs, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(base + HALF + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(base + offs, (x1 * cos - x2 * sin).to(qkv_ptr.dtype.element_ty), mask=mask)
    tl.store(base + HALF + offs, (x2 * cos + x1 * sin).to(qkv_ptr.dtype.element_ty), mask=mask)


def rotary(qkv: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor, heads: int, head_dim: int) -> None:
    if qkv.stride(1) != 1:
        raise ValueError("rotary needs rows of contiguous columns")
    half = head_dim // 2
    _rotary_kernel[(qkv.shape[0], heads)](qkv, positions, inv_freq, qkv.stride(0), HALF=half,
                                          BLOCK=triton.next_power_of_2(half))


@triton.jit
def _silu_mul_kernel(gu_ptr, out_ptr, stride_g, stride_o, n, BLOCK: tl.constexpr):
    m = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    g = tl.load(gu_ptr + m * stride_g + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(gu_ptr + m * stride_g + n + offs, mask=mask, other=0.0).to(tl.float32)
    y = g / (1.0 + tl.exp(-g)) * u
    tl.store(out_ptr + m * stride_o + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    M, two_n = gate_up.shape
    n = two_n // 2
    out = torch.empty(M, n, dtype=gate_up.dtype, device=gate_up.device)
    block = 1024
    _silu_mul_kernel[(M, triton.cdiv(n, block))](gate_up, out, gate_up.stride(0), out.stride(0), n, BLOCK=block)
    return out
