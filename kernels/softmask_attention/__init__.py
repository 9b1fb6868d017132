"""Soft-mask attention for sparsity-aware training (design.md §1): attention whose logits get a
per-(query, page) log-gate around each query's UNIQUE top-k page boundary.

`softmask_attention` runs the Triton kernels (interpreter on CPU with TRITON_INTERPRET=1) under an
autograd Function; `softmask_attention_naive` is the fully materialised PyTorch spec. Causal mode is
decoder self-attention (prefill style); causal=False is cross-attention (e.g. Whisper's decoder over
encoder frames). docs/softmask.md describes the math and the choice of tau.
"""

from __future__ import annotations

import math

import torch

from .naive import LOG_GATE_FLOOR, check_inputs, page_stats, softmask_attention_naive
from .threshold import page_thresholds
from .triton import softmask_backward, softmask_forward

__all__ = [
    "LOG_GATE_FLOOR",
    "page_stats",
    "page_thresholds",
    "softmask_attention",
    "softmask_attention_naive",
]


class _SoftmaskAttention(torch.autograd.Function):
    """Triton forward/backward; mu and std are inputs, so torch maps dmu, dstd back onto k."""

    @staticmethod
    def forward(ctx, q, k, v, mu, std, theta, options):
        out, lse = softmask_forward(q, k, v, mu, std, theta, **options)
        ctx.save_for_backward(q, k, v, mu, std, theta, out, lse)
        ctx.options = options
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, mu, std, theta, out, lse = ctx.saved_tensors
        grads = softmask_backward(q, k, v, mu, std, theta, out, lse, dout.contiguous(), **ctx.options)
        return (*grads, None, None)


def softmask_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    page_size: int,
    top_k: int,
    tau: float,
    lam: float = 0.5,
    hard: bool = False,
    causal: bool = True,
    scale: float | None = None,
    block_m: int | None = None,
    block_p: int | None = None,
) -> torch.Tensor:
    """Soft-mask attention (Triton). q [B, TQ, H, D], k, v [B, TK, Hkv, D] -> [B, TQ, H, D] (q's dtype).

    page_size S (power of two), top_k pages kept per query and KV head, tau the gate temperature in raw
    q·k score units, lam the spread weight, hard=True for the hard top-k mask (no gradient through the
    selection), causal=False for cross-attention. block_m queries and block_p pages per tile (defaults
    suit a GPU; tests use small ones to cover many tiles).
    """
    check_inputs(q, k, v, page_size, top_k, tau, causal)
    if (
        q.dtype not in (torch.float16, torch.bfloat16, torch.float32)
        or k.dtype != q.dtype
        or v.dtype != q.dtype
    ):
        raise ValueError(
            f"q, k, v must share one dtype of float16/bfloat16/float32; got {q.dtype}, {k.dtype}, {v.dtype}"
        )
    if q.dtype == torch.bfloat16 and q.device.type == "cpu":
        # Triton's interpreter multiplies bf16 tiles as raw bit patterns (triton-lang/triton#11584).
        raise ValueError(
            "bfloat16 soft-mask attention needs a GPU; Triton's CPU interpreter has no bf16 tl.dot"
        )
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    mu, std = page_stats(k, page_size)
    theta = page_thresholds(q, mu, std, page_size=page_size, top_k=top_k, lam=lam, causal=causal)
    options = dict(
        page_size=page_size,
        top_k=top_k,
        tau=float(tau),
        lam=float(lam),
        causal=causal,
        hard=hard,
        scale=1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale),
        floor=LOG_GATE_FLOOR,
        block_m=block_m,
        block_p=block_p,
    )
    return _SoftmaskAttention.apply(q, k, v, mu, std, theta, options)
