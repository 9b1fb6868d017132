"""Triton threshold select: theta = midpoint of each query's k-th and (k+1)-th largest gateable page score.

No score matrix is stored. One program owns a tile of queries of one KV head and finds the k-th largest
group-max page score per query by a radix search on the scores' order-preserving uint32 keys, 4 bits per
pass (8 passes, each counting, for 16 candidate digits at once, the pages at or above the candidate),
then one more pass for the (k+1)-th: either a tie with the k-th or the largest key below it. Every pass
recomputes the scores from q, mu and std (the same fp32 IEEE tile product as the attention kernels), so
the extra work is 9 passes of 1/S of the forward's q·kᵀ flops each, and no TQ x P tensor exists.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton import _group_scores, _load_page_stats, _load_rows, _rows, tile_params

DIGIT_BITS = 4


@triton.jit
def _order_key(s):
    """float32 -> uint32 with the same order (flip all bits of negatives, the sign bit of the rest)."""
    bits = s.to(tl.uint32, bitcast=True)
    return tl.where((bits >> 31) == 1, bits ^ 0xFFFFFFFF, bits ^ 0x80000000)


@triton.jit
def _order_value(u):
    """Inverse of _order_key: uint32 key -> float32."""
    return tl.where((u >> 31) == 1, u ^ 0x80000000, u ^ 0xFFFFFFFF).to(tl.float32, bitcast=True)


@triton.jit
def _page_keys(
    qf,
    qnorm,
    valid,
    MU,
    STD,
    b,
    kvh,
    page0,
    tq,
    P,
    lam,
    HKV: tl.constexpr,
    GP: tl.constexpr,
    D: tl.constexpr,
    S: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_D: tl.constexpr,
    CAUSAL: tl.constexpr,
):
    """Order keys [BLOCK_M, BLOCK_P] of the group-max scores of pages page0.. and which are gateable."""
    mu, std = _load_page_stats(MU, STD, b, kvh, page0, P, HKV, D, BLOCK_P, BLOCK_D)
    _, gmax = _group_scores(qf, qnorm, valid, mu, std, lam, BLOCK_M, GP, BLOCK_P)
    pages = page0 + tl.arange(0, BLOCK_P)
    if CAUSAL:
        vis = pages[None, :] < (tq // S)[:, None]
    else:
        vis = (pages[None, :] < P) & (tq[:, None] >= 0)
    return _order_key(gmax), vis


@triton.jit
def _theta_kernel(
    Q,
    MU,
    STD,
    THETA,
    TQ,
    P,
    K_TOP,
    lam,
    H: tl.constexpr,
    HKV: tl.constexpr,
    G: tl.constexpr,
    GP: tl.constexpr,
    D: tl.constexpr,
    S: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_D: tl.constexpr,
    CAUSAL: tl.constexpr,
    DIGIT_BITS: tl.constexpr,
):
    """theta [B, TQ, HKV] for one (b, kvh, query tile); 0 for queries that are not gated."""
    RADIX: tl.constexpr = 1 << DIGIT_BITS
    m0 = tl.program_id(0) * BLOCK_M
    b = tl.program_id(1) // HKV
    kvh = tl.program_id(1) % HKV
    t, g, valid = _rows(m0, TQ, G, GP, BLOCK_M)
    qf = _load_rows(Q, b, t, g, kvh, valid, TQ, H, G, D, BLOCK_D).to(tl.float32)
    qnorm = tl.sqrt(tl.sum(qf * qf, axis=1))
    tq = m0 + tl.arange(0, BLOCK_M)
    if CAUSAL:
        gated = (tq // S > K_TOP) & (tq < TQ)
        end = tl.minimum(P, (m0 + BLOCK_M - 1) // S)
    else:
        gated = (tq < TQ) & (P > K_TOP)
        end = P
    digits = tl.arange(0, RADIX).to(tl.uint32)
    prefix = tl.zeros((BLOCK_M,), tl.uint32)
    # Invariant: at least K_TOP gateable keys are >= prefix; each pass fixes the next DIGIT_BITS bits.
    for i in tl.static_range(32 // DIGIT_BITS):
        shift = 32 - DIGIT_BITS * (i + 1)  # i is a static_range constant, so this folds at compile time
        cand = prefix[:, None] | (digits[None, :] << shift)
        counts = tl.zeros((BLOCK_M, RADIX), tl.int32)
        for page0 in range(0, end, BLOCK_P):
            u, vis = _page_keys(
                qf,
                qnorm,
                valid,
                MU,
                STD,
                b,
                kvh,
                page0,
                tq,
                P,
                lam,
                HKV,
                GP,
                D,
                S,
                BLOCK_M,
                BLOCK_P,
                BLOCK_D,
                CAUSAL,
            )
            hit = (u[:, :, None] >= cand[:, None, :]) & vis[:, :, None]
            counts += tl.sum(hit.to(tl.int32), axis=1)
        best = tl.maximum(tl.sum((counts >= K_TOP).to(tl.int32), axis=1) - 1, 0)
        prefix = prefix | (best.to(tl.uint32) << shift)
    at_or_above = tl.zeros((BLOCK_M,), tl.int32)
    below = tl.zeros((BLOCK_M,), tl.uint32)
    for page0 in range(0, end, BLOCK_P):
        u, vis = _page_keys(
            qf,
            qnorm,
            valid,
            MU,
            STD,
            b,
            kvh,
            page0,
            tq,
            P,
            lam,
            HKV,
            GP,
            D,
            S,
            BLOCK_M,
            BLOCK_P,
            BLOCK_D,
            CAUSAL,
        )
        at_or_above += tl.sum((vis & (u >= prefix[:, None])).to(tl.int32), axis=1)
        below = tl.maximum(below, tl.max(tl.where(vis & (u < prefix[:, None]), u, 0), axis=1))
    following = tl.where(at_or_above > K_TOP, prefix, below)
    theta = (_order_value(prefix) + _order_value(following)) / 2
    tl.store(THETA + (b * TQ + tq) * HKV + kvh, tl.where(gated, theta, 0.0), mask=tq < TQ)


@torch.no_grad()
def page_thresholds(
    q: torch.Tensor,
    mu: torch.Tensor,
    std: torch.Tensor,
    *,
    page_size: int,
    top_k: int,
    lam: float,
    causal: bool,
    block_m: int | None = None,
    block_p: int | None = None,
) -> torch.Tensor:
    """theta [B, TQ, Hkv] float32 (a stop-gradient constant of the gate; 0 where a query is not gated).

    q: [B, TQ, H, D] contiguous; mu [B, Hkv, P, D], std [B, Hkv, P] float32 (P = ceil(TK / page_size)).
    block_m queries and block_p pages per tile (powers of two; defaults as for the attention kernels).
    """
    B, TQ, H, D = q.shape
    c = tile_params(H, mu.shape[1], D, page_size, causal, block_m, block_p, mu.is_cuda)
    theta = torch.empty(B, TQ, c["HKV"], device=q.device, dtype=torch.float32)
    grid = (triton.cdiv(TQ, c["BLOCK_M"]), B * c["HKV"])
    _theta_kernel[grid](q, mu, std, theta, TQ, mu.shape[2], top_k, float(lam), DIGIT_BITS=DIGIT_BITS, **c)
    return theta
