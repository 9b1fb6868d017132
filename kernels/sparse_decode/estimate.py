"""Triton: sparse decode attention whose unselected pages still enter the softmax as page-mean terms.

Spec: `sparse_decode_attention_estimate_naive` (naive.py). Two launches:
1. the sparse decode kernel (triton.py) over the selected pages, writing its per-split normalised outputs
   and log-sum-exps instead of merging them;
2. `_estimate_merge_kernel`, one program per (sequence, KV head): walks the sequence's page table, skips the
   pages the selection lists, and keeps an online softmax over the page terms log2(n_p) + scale·q·mu_p
   (values vbar_p) in fp32; then it folds in the exact part's splits with the same log-sum-exp merge and
   writes [G, D] output rows. The page terms are q·mu products of G rows, computed by broadcasting in fp32
   (no tl.dot: G is 1 for Whisper and the tile is small), so the estimate is fp32-exact on every device.
Bytes read by step 2 per (sequence, KV head): the held pages' key and value means (2·D pool-dtype values
a page, D + 4 with coded (fp8 / int8) key means) plus one page-table row, on top of the selected pages' K/V.
Not measured on a GPU yet (scripts/bench_estimate.py does). Step 2 is not split over the page table: at
batch 1 with a long context it runs on Hkv programs that each walk every page; a split with a per-split
log-sum-exp (as the decode kernel has) is the next step there, and fusing it into the scoring pass (which
already reads the key means) would save the key-mean re-read.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .naive import validate_page_means
from .triton import _LOG2E, SPARSE_CONFIG, _check_triton_inputs, _launch


@triton.jit
def _estimate_merge_kernel(
    q_ptr, kmean_ptr, kscale_ptr, vmean_ptr, ids_ptr, table_ptr, len_ptr, part_o_ptr, part_lse_ptr, out_ptr,
    qk_scale, n_ids,
    stride_qb, stride_qh, stride_ib, stride_ih, stride_tb, stride_ob, stride_oh,
    G: tl.constexpr, HKV: tl.constexpr, S: tl.constexpr, D: tl.constexpr, BLOCK_G: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, NUM_SPLITS: tl.constexpr, HAS_KSCALE: tl.constexpr,
):
    bh = tl.program_id(0)
    b = bh // HKV
    h = bh % HKV
    length = tl.load(len_ptr + b)
    n_pages = (length + S - 1) // S
    last_count = (length - (n_pages - 1) * S).to(tl.float32)
    rows = tl.arange(0, BLOCK_G)
    dims = tl.arange(0, D)
    row_ok = rows < G
    q = tl.load(q_ptr + b * stride_qb + (h * G + rows)[:, None] * stride_qh + dims[None, :],
                mask=row_ok[:, None], other=0.0).to(tl.float32)
    kk = tl.arange(0, BLOCK_K)
    ids = tl.load(ids_ptr + b * stride_ib + h * stride_ih + kk, mask=kk < n_ids, other=-1)

    # online softmax over the unselected held pages' terms, log2 domain
    m_i = tl.full([BLOCK_G], -1.0e30, tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, D], tl.float32)
    for m0 in range(0, n_pages, BLOCK_M):
        slot = m0 + tl.arange(0, BLOCK_M)
        held = slot < n_pages
        page = tl.load(table_ptr + b * stride_tb + slot, mask=held, other=-1)
        chosen = tl.sum(((page[:, None] == ids[None, :]) & (ids[None, :] >= 0)).to(tl.int32), 1) > 0
        take = held & (page >= 0) & ~chosen
        pg = tl.where(take, page, 0).to(tl.int64)
        stat = (pg * HKV + h)[:, None] * D + dims[None, :]
        mu = tl.load(kmean_ptr + stat, mask=take[:, None], other=0.0).to(tl.float32)
        if HAS_KSCALE:
            mu = mu * tl.load(kscale_ptr + pg * HKV + h, mask=take, other=0.0)[:, None]
        vbar = tl.load(vmean_ptr + stat, mask=take[:, None], other=0.0).to(tl.float32)
        count = tl.where(slot == n_pages - 1, last_count, S * 1.0)
        logit = tl.sum(q[:, None, :] * mu[None, :, :], 2) * qk_scale + tl.log2(count)[None, :]   # [G, M]
        logit = tl.where(take[None, :], logit, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(logit, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(logit - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.sum(p[:, :, None] * vbar[None, :, :], 1)
        m_i = m_new

    # fold in the exact part: split s holds a normalised output o_s and its log-sum-exp lse_s
    base = bh * NUM_SPLITS * G
    for s in range(NUM_SPLITS):
        prow = base + s * G + rows
        lse = tl.load(part_lse_ptr + prow, mask=row_ok, other=float("-inf"))
        o = tl.load(part_o_ptr + prow[:, None] * D + dims[None, :], mask=row_ok[:, None], other=0.0)
        m_new = tl.maximum(m_i, lse)
        alpha = tl.exp2(m_i - m_new)
        w = tl.exp2(lse - m_new)
        l_i = l_i * alpha + w
        acc = acc * alpha[:, None] + o * w[:, None]
        m_i = m_new
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(out_ptr + b * stride_ob + (h * G + rows)[:, None] * stride_oh + dims[None, :],
             out.to(out_ptr.dtype.element_ty), mask=row_ok[:, None])


def sparse_decode_attention_estimate(q, k_pool, v_pool, page_ids, page_table, lengths, key_mean, value_mean,
                                     key_scale=None, scale=None, config=None):
    """Exact softmax over the selected pages plus one page-mean term per held unselected page; arguments as
    `sparse_decode_attention` plus key_mean [P, Hkv, D] (pool dtype, or fp8 / int8 codes with key_scale fp32 [P, Hkv])
    and value_mean [P, Hkv, D] (pool dtype): the cache's page statistics. Returns [B, H, D] in q.dtype."""
    _check_triton_inputs(q, k_pool, v_pool, page_ids, page_table, lengths)
    validate_page_means(key_mean, value_mean, key_scale, k_pool)
    if not (key_mean.is_contiguous() and value_mean.is_contiguous()
            and (key_scale is None or key_scale.is_contiguous())):
        raise ValueError("key_mean, value_mean and key_scale must be contiguous")
    B, H, D = q.shape
    S, Hkv = k_pool.shape[1], k_pool.shape[2]
    G = H // Hkv
    scale = D ** -0.5 if scale is None else scale
    part_o, part_lse, splits = _launch(q, k_pool, v_pool, page_ids, page_table, lengths, scale, False,
                                       config or SPARSE_CONFIG, partials=True)
    out = torch.empty_like(q)
    block_g = triton.next_power_of_2(G)
    # the [G, M, D] product tile stays at <= 4096 fp32 values (32 a thread at 4 warps)
    block_m = max(1, min(64, 4096 // (block_g * D)))
    block_m = 1 << int(math.log2(block_m))
    _estimate_merge_kernel[(B * Hkv,)](
        q, key_mean, key_scale if key_scale is not None else part_lse, value_mean, page_ids, page_table, lengths,
        part_o, part_lse, out, scale * _LOG2E, page_ids.shape[-1],
        q.stride(0), q.stride(1), page_ids.stride(0), page_ids.stride(1), page_table.stride(0),
        out.stride(0), out.stride(1),
        G=G, HKV=Hkv, S=S, D=D, BLOCK_G=block_g, BLOCK_M=block_m,
        BLOCK_K=triton.next_power_of_2(max(1, page_ids.shape[-1])), NUM_SPLITS=splits,
        HAS_KSCALE=key_scale is not None, num_warps=4,
    )
    return out
