"""Triton kernels of the fused step pieces (contracts: `naive`). One program per row for the norm (d <= 8192
in one block), per (row, head) for rotary, per (row, block of columns) for silu_mul: each reads and writes its
bytes once. The norm and rotary also take a skinny GEMM's fp32 split-K partials [S, M, N] as their input and sum
them on the way (the GEMM's reduce, fused: `skinny`)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._pdl import pdl_enter, pdl_launch


@triton.jit
def _add_rms_norm_kernel(x_ptr, r_ptr, w_ptr, out_ptr, stride_xs, stride_x, stride_r, stride_o, d, eps,
                         HAS_X: tl.constexpr, SPLIT: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr = False):
    pdl_enter(PDL)
    m = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < d
    r = tl.load(r_ptr + m * stride_r + offs, mask=mask, other=0.0)
    if HAS_X:
        acc = r.to(tl.float32)
        for s in tl.static_range(SPLIT):  # unrolled: the SPLIT loads in flight together
            acc += tl.load(x_ptr + s * stride_xs + m * stride_x + offs, mask=mask, other=0.0).to(tl.float32)
        r = acc.to(r_ptr.dtype.element_ty)
        tl.store(r_ptr + m * stride_r + offs, r, mask=mask)
    rf = r.to(tl.float32)
    inv = 1.0 / tl.sqrt(tl.sum(rf * rf, axis=0) / d + eps)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + m * stride_o + offs, (rf * inv * w).to(out_ptr.dtype.element_ty), mask=mask)


def add_rms_norm(x: torch.Tensor | None, residual: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    M, d = residual.shape
    out = torch.empty_like(residual)
    parts = x if x is None or x.dim() == 3 else x[None]
    split = 1 if x is None else parts.shape[0]
    # split-K partials: their SPLIT loads are unrolled (in flight together, not one DRAM latency each); 16 warps
    # keep them in registers (offline sm_90 build, d 3072, SPLIT 8: 4 warps 255 registers + stack, 16 warps 90)
    _add_rms_norm_kernel[(M,)](residual if x is None else parts, residual, weight, out,
                               0 if x is None else parts.stride(0), 0 if x is None else parts.stride(1),
                               residual.stride(0), out.stride(0), d, eps, HAS_X=x is not None,
                               SPLIT=split, BLOCK=triton.next_power_of_2(d), num_warps=16 if split > 1 else 4,
                               **pdl_launch(residual))
    return out


@triton.jit
def _rotary_kernel(src_ptr, dst_ptr, pos_ptr, freq_ptr, stride_s, stride_m, stride_dm, heads,
                   SPLIT: tl.constexpr, HALF: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr = False):
    pdl_enter(PDL)
    m = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    offs = tl.arange(0, BLOCK)
    mask = offs < HALF
    base = src_ptr + m * stride_m + h * (2 * HALF)
    x1 = tl.zeros((BLOCK,), dtype=tl.float32)
    x2 = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in tl.static_range(SPLIT):  # unrolled: the SPLIT loads in flight together
        x1 += tl.load(base + s * stride_s + offs, mask=mask, other=0.0).to(tl.float32)
        x2 += tl.load(base + s * stride_s + HALF + offs, mask=mask, other=0.0).to(tl.float32)
    angle = tl.load(pos_ptr + m).to(tl.float32) * tl.load(freq_ptr + offs, mask=mask, other=0.0)
    rot = (h < heads).to(tl.float32)  # heads past `heads` (v) are copied: cos 1, sin 0
    cos, sin = rot * tl.cos(angle) + (1.0 - rot), rot * tl.sin(angle)
    out = dst_ptr + m * stride_dm + h * (2 * HALF)
    tl.store(out + offs, (x1 * cos - x2 * sin).to(dst_ptr.dtype.element_ty), mask=mask)
    tl.store(out + HALF + offs, (x2 * cos + x1 * sin).to(dst_ptr.dtype.element_ty), mask=mask)


def rotary(qkv: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor, heads: int, head_dim: int) -> None:
    if qkv.stride(1) != 1:
        raise ValueError("rotary needs rows of contiguous columns")
    half = head_dim // 2
    _rotary_kernel[(qkv.shape[0], heads)](qkv, qkv, positions, inv_freq, 0, qkv.stride(0), qkv.stride(0), heads,
                                          SPLIT=1, HALF=half, BLOCK=triton.next_power_of_2(half), **pdl_launch(qkv))


def rotary_sum(partials: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor, heads: int,
               head_dim: int, dtype: torch.dtype) -> torch.Tensor:
    """The fused QKV output from its fp32 split-K partials [S, M, W]: summed, the first `heads` heads rotated,
    the rest copied, in `dtype` [M, W]."""
    S, M, W = partials.shape
    half = head_dim // 2
    out = torch.empty(M, W, dtype=dtype, device=partials.device)
    _rotary_kernel[(M, W // head_dim)](partials, out, positions, inv_freq, partials.stride(0), partials.stride(1),
                                       out.stride(0), heads, SPLIT=S, HALF=half, BLOCK=triton.next_power_of_2(half),
                                       **pdl_launch(out))
    return out


@triton.jit
def _silu_mul_kernel(gu_ptr, out_ptr, stride_g, stride_o, n, BLOCK: tl.constexpr, PDL: tl.constexpr = False):
    pdl_enter(PDL)
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
    _silu_mul_kernel[(M, triton.cdiv(n, block))](gate_up, out, gate_up.stride(0), out.stride(0), n, BLOCK=block,
                                                 **pdl_launch(out))
    return out
