"""Skinny GEMMs of the decode step: y = x @ weight.T for a few rows (M <= 16), read-bound on the weight.

At batch 16 cuBLAS read the Voxtral-Mini-3B decoder's weights at 2.44 TB/s on an H100 (73 % of 3.35), worst on
the split-K O and down projections (2.06 TB/s with their separate reduce kernel): BENCHMARKS.md, "decode step near
its floors". Here one program streams a [BLOCK_N, K / split] slab of the weight once (the rows of x ride along
as the 16-wide side of the MMA), so every weight byte is read once; with split > 1 the K-slices' fp32 partial sums
go out as [split, M, N] and the step's next kernel (the residual add + RMSNorm, or rotary for QKV) sums them
while it reads them anyway: no reduce launch. `silu=True` forms silu(gate) * up of x = [gate | up] on load (the
down projection reads the gate+up output directly: no silu_mul launch). Which config (or cuBLAS) runs for a shape
is measured on the device (unique_asr.models.step_gemms); contracts: `naive.skinny_linear_naive`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .._pdl import pdl_enter, pdl_launch, prefetch_l2

BLOCK_M = 16  # rows of x per program: the decode step's batch (more rows: cuBLAS)
# Triton's CPU interpreter multiplies bf16 tiles as raw 16-bit integers (measured: garbage); there the tiles go
# through fp32 (exact: bf16 and fp16 values are fp32 values). The GPU multiplies them as they are; fp32 weights
# (tests) in full fp32, not tf32.
_DOT_F32 = os.environ.get("TRITON_INTERPRET", "0") == "1"


@dataclass(frozen=True)
class SkinnyConfig:
    """block_n output columns x block_k reduction per loop iteration; split: K-slices (programs) per column
    block; warps, stages: Triton launch parameters (stages = loads in flight)."""

    block_n: int = 64
    block_k: int = 128
    split: int = 1
    warps: int = 4
    stages: int = 4
    tma: bool = False  # weight tiles by the Hopper tensor-memory accelerator (a TMA descriptor), not pointer loads
    # with programmatic dependent launch (kernels/_pdl.py): the first `prefetch` weight tiles of a program are
    # asked of L2 before it waits for the kernel before it (weights are never written in a step), so the slab's
    # first reads overlap that kernel's run; pointer loads only, no effect without PDL. Timed only as part of PDL
    # (on with it in the H100 A/B that took 0.7 % off the step, BENCHMARKS.md), not on its own.
    prefetch: int = 2

    def fits(self, n: int, k: int) -> bool:
        return n % self.block_n == 0 and k % (self.block_k * self.split) == 0


@triton.jit
def _accumulate(acc, w, x_ptrs, x_mask, up_offset, SILU: tl.constexpr, DOT_F32: tl.constexpr):
    """acc + w [BLOCK_N, BLOCK_K] @ the x tile at x_ptrs, transposed [BLOCK_K, BLOCK_M] (silu(gate) * up formed
    on load when SILU): one K step of both skinny kernels, whatever loaded w."""
    if SILU:
        g = tl.load(x_ptrs, mask=x_mask, other=0.0).to(tl.float32)
        u = tl.load(x_ptrs + up_offset, mask=x_mask, other=0.0).to(tl.float32)
        xt = (g / (1.0 + tl.exp(-g)) * u).to(x_ptrs.dtype.element_ty).to(w.dtype)
    else:
        xt = tl.load(x_ptrs, mask=x_mask, other=0.0).to(w.dtype)
    if DOT_F32:
        return tl.dot(w.to(tl.float32), xt.to(tl.float32), acc, input_precision="ieee")
    else:
        return tl.dot(w, xt, acc)


@triton.jit
def _store(out_ptr, acc, pid_s, stride_os, stride_om, rm, rn, x_mask):
    """The [BLOCK_N, BLOCK_M] accumulator to out[pid_s] ([M, N] rows of x; split-K: the slice's partials)."""
    out_ptrs = out_ptr + pid_s * stride_os + rm[None, :] * stride_om + rn[:, None]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=x_mask)


@triton.jit
def _skinny_kernel(x_ptr, w_ptr, out_ptr, M, stride_xm, stride_wn, stride_os, stride_om, up_offset,
                   K_SLICE: tl.constexpr, SILU: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   BLOCK_K: tl.constexpr, DOT_F32: tl.constexpr, PDL: tl.constexpr = False,
                   PREFETCH: tl.constexpr = 0, LINE: tl.constexpr = 64):
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if PDL and PREFETCH > 0:  # before the wait: only the weight (SkinnyConfig.prefetch), a pointer a 128-byte line
        cols = pid_s * K_SLICE + tl.arange(0, BLOCK_K // LINE) * LINE
        lines = w_ptr + rn[:, None].to(tl.int64) * stride_wn + cols[None, :]
        for i in tl.static_range(PREFETCH):
            prefetch_l2(lines + i * BLOCK_K)
    pdl_enter(PDL)
    rm = tl.arange(0, BLOCK_M)
    rk = pid_s * K_SLICE + tl.arange(0, BLOCK_K)
    w_ptrs = w_ptr + rn[:, None].to(tl.int64) * stride_wn + rk[None, :]
    x_ptrs = x_ptr + rm[None, :] * stride_xm + rk[:, None]  # x transposed: [BLOCK_K, BLOCK_M]
    x_mask = rm[None, :] < M
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    for _ in range(0, K_SLICE, BLOCK_K):
        acc = _accumulate(acc, tl.load(w_ptrs), x_ptrs, x_mask, up_offset, SILU, DOT_F32)
        w_ptrs += BLOCK_K
        x_ptrs += BLOCK_K
    _store(out_ptr, acc, pid_s, stride_os, stride_om, rm, rn, x_mask)


@triton.jit
def _skinny_tma_kernel(x_ptr, w_desc, out_ptr, M, stride_xm, stride_os, stride_om, up_offset,
                       K_SLICE: tl.constexpr, SILU: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_K: tl.constexpr, STAGES: tl.constexpr, DOT_F32: tl.constexpr,
                       PDL: tl.constexpr = False):
    """`_skinny_kernel` with the weight slab streamed through a TMA descriptor ([BLOCK_N, BLOCK_K] boxes, STAGES
    in flight): one thread issues each tile's bulk copy, so the loads cost no address registers or LSU issue."""
    pdl_enter(PDL)
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = tl.arange(0, BLOCK_M)
    k0 = pid_s * K_SLICE
    x_ptrs = x_ptr + rm[None, :] * stride_xm + (k0 + tl.arange(0, BLOCK_K))[:, None]  # [BLOCK_K, BLOCK_M]
    x_mask = rm[None, :] < M
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    for k in tl.range(k0, k0 + K_SLICE, BLOCK_K, num_stages=STAGES):
        acc = _accumulate(acc, w_desc.load([pid_n * BLOCK_N, k]), x_ptrs, x_mask, up_offset, SILU, DOT_F32)
        x_ptrs += BLOCK_K
    _store(out_ptr, acc, pid_s, stride_os, stride_om, rm, rn, x_mask)


def skinny_linear(x: torch.Tensor, weight: torch.Tensor, config: SkinnyConfig, silu: bool = False) -> torch.Tensor:
    """x [M, K] (silu: [M, 2K] = [gate | up]) @ weight [N, K].T, M <= 16. config.split == 1: [M, N] in x's
    dtype; else fp32 partial sums [split, M, N] over consecutive K-slices (their sum is the product)."""
    M = x.shape[0]
    N, K = weight.shape
    if M > BLOCK_M or x.shape[1] != (2 * K if silu else K) or x.stride(1) != 1 or weight.stride(1) != 1:
        raise ValueError(f"skinny_linear: x {tuple(x.shape)} does not fit weight {tuple(weight.shape)} (M <= 16)")
    if not config.fits(N, K):
        raise ValueError(f"skinny_linear: {config} does not tile [{N}, {K}]")
    if config.tma and (weight.data_ptr() % 16 or weight.stride(0) * weight.element_size() % 16):
        raise ValueError("skinny_linear: a TMA config needs the weight and its rows 16-byte aligned")
    split = config.split
    out = (torch.empty(M, N, dtype=x.dtype, device=x.device) if split == 1
           else torch.empty(split, M, N, dtype=torch.float32, device=x.device))
    common = dict(K_SLICE=K // split, SILU=silu, BLOCK_M=BLOCK_M, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
                  DOT_F32=_DOT_F32 or weight.dtype == torch.float32, num_warps=config.warps,
                  **pdl_launch(x))
    out_strides = (out.stride(0) if split > 1 else 0, out.stride(-2))
    if config.tma:
        from triton.tools.tensor_descriptor import TensorDescriptor  # Triton >= 3.3 (pyproject allows 3.2)

        desc = TensorDescriptor.from_tensor(weight, [config.block_n, config.block_k])
        _skinny_tma_kernel[(N // config.block_n, split)](x, desc, out, M, x.stride(0), *out_strides, K,
                                                          STAGES=config.stages, **common)
    else:
        line = max(1, 128 // weight.element_size())
        prefetch = min(config.prefetch, (K // split) // config.block_k) if config.block_k % line == 0 else 0
        _skinny_kernel[(N // config.block_n, split)](x, weight, out, M, x.stride(0), weight.stride(0), *out_strides,
                                                     K, num_stages=config.stages, PREFETCH=prefetch, LINE=line,
                                                     **common)
    return out
