"""Triton re-ranking of a page selection: the k best of C >= k candidate pages by the pool-dtype key means
(same contract as `refine_pages_naive`).

Why: one-byte means (int8 / e4m3 codes, `stats_dtype`) halve the bytes the scoring pass streams, but their
rounding reorders near-ties at the top-k boundary: on SmolLM2 2K-8K, int8 selections hold 97.8-99.2 % of
the bf16 selection's pages. Selecting k + m pages from the codes and keeping the best k by the bf16 means
of those few candidates restores it (m = 4: 99.8-100 % in every cell of docs/selection_quality.md; e4m3
codes 98.1-99.8 %) and reads (k + m) more means per (sequence, KV head), not a second pass over the row.

One program per (sequence, KV head) scores its candidates in tiles with the select kernel's own scoring
(`_load_query`, `_score_block`: bf16 tensor-core products, the same launch meta as `select_pages` on these
means), stores the fp32 scores, and keeps the best k: by dropping the C - k lowest, one reduction each
("drop"), or by the select kernel's k-th-key bisection ("kth", 16 tuple reductions); then the in-order
compaction. Ties go to the earlier candidate, i.e. the lower logical page.

Measured (H100, `scripts/bench_refine.py`, BENCHMARKS.md): the first version gathered the means into a
[G, C, D-chunk] fp32 product of its own (64-118 registers) and took 47 us at batch 80 x 8 KV heads, k 64 + 4,
17 us at batch 1; with the select kernel's tiles 16 / 12 us (48 registers). "drop" beats "kth" by 1.1-1.3x up
to 256 candidates at batch 80; from 256 at batch 1, and at 512, "kth" is as fast or faster: `DROP_BLOCK`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .naive import validate_refine
from .registry import SCORES
from .triton import SelectConfig, _compact_slots, _kth_key, _launch_meta, _load_query, _order_key, _score_block

MAX_CANDIDATES = 4096  # candidates held in registers by one program (k + refine at most)
MAX_DROP = 16  # C - k up to this: drop the lowest one by one (method "drop") instead of the k-th bisection
DROP_BLOCK = 256  # ... for up to this many candidates ("kth" as fast or faster above: bench_refine, H100)


@triton.jit
def _refine_kernel(q_ptr, stride_qb, stride_qh, cand_ptr, table_ptr, lengths_ptr, max_pages, mean_ptr, std_ptr,
                   sigma_ptr, kmin_ptr, kmax_ptr, scale_ptr, scores_ptr, out_ptr, K, C, lam,
                   HKV: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, BLOCK_D: tl.constexpr,
                   S: tl.constexpr, BLOCK_P: tl.constexpr, MODE: tl.constexpr, PREC: tl.constexpr,
                   PREFETCH: tl.constexpr, HAS_SCALE: tl.constexpr, TC: tl.constexpr, SCORES_L2: tl.constexpr,
                   FMA: tl.constexpr, BLOCK_C: tl.constexpr, KEEP_FIRST: tl.constexpr, KEEP_LAST: tl.constexpr,
                   DROP: tl.constexpr):
    bh = tl.program_id(0)
    b = bh // HKV
    h = bh % HKV
    cand_row = cand_ptr + bh.to(tl.int64) * C
    row = bh.to(tl.int64) * C  # this program's scores in scores_ptr
    # the select kernel's scoring (`_score_block`, same launch meta): the candidates are the tile's pages
    q, qabs, qnorm, gmask, q1h, q1l, q2h, q2l, qinv = _load_query(q_ptr, b, h, stride_qb, stride_qh, G, GP, D,
                                                                  BLOCK_D, MODE, (TC + 1) // 2 - 1)
    offs_d = tl.arange(0, BLOCK_D)
    q_row = q_ptr + b * stride_qb + h * G * stride_qh
    for c0 in range(0, C, BLOCK_P):
        offs = c0 + tl.arange(0, BLOCK_P)
        ids = tl.load(cand_row + offs, mask=offs < C, other=-1)
        pmask = ids >= 0
        s = _score_block(q, qabs, qnorm, gmask, q1h, q1l, q2h, q2l, qinv, tl.where(pmask, ids, 0), pmask, h,
                         mean_ptr, std_ptr, sigma_ptr, kmin_ptr, kmax_ptr, scale_ptr, lam, offs_d, offs_d < D,
                         q_row, stride_qh, HKV, D, MODE, PREC, HAS_SCALE, G, FMA, TC)
        tl.store(scores_ptr + row + offs, s, mask=offs < C)
    tl.debug_barrier()  # the scores stored above are re-read by other threads of this program
    offs_c = tl.arange(0, BLOCK_C)
    cand = tl.load(cand_row + offs_c, mask=offs_c < C, other=-1)
    valid = cand >= 0
    s = tl.load(scores_ptr + row + offs_c, mask=valid, other=float("-inf"))
    n_pages = tl.minimum(tl.cdiv(tl.load(lengths_ptr + b), S), max_pages)
    if KEEP_FIRST:
        first = tl.load(table_ptr + b.to(tl.int64) * max_pages)
        s = tl.where((cand == first) & (n_pages > 0), float("inf"), s)
    if KEEP_LAST:
        last = tl.load(table_ptr + b.to(tl.int64) * max_pages + tl.maximum(n_pages - 1, 0))
        s = tl.where((cand == last) & (n_pages > 0), float("inf"), s)
    key = tl.where(valid, _order_key(s), 0)  # the select kernel's order-preserving keys; 0 marks no candidate
    n_valid = tl.sum(valid.to(tl.int32), axis=0)
    out_row = out_ptr + bh.to(tl.int64) * K
    if DROP > 0:  # C - K <= DROP: drop the n_valid - K lowest keys, one min-reduction each
        # packed (key, BLOCK_C - 1 - slot): the minimum is the lowest key and, among equal keys, the last
        # candidate (ties keep the earlier one); no candidate packs above every key
        packed = tl.where(valid, key.to(tl.int64) * BLOCK_C + (BLOCK_C - 1 - offs_c), 1 << 62)
        n_drop = n_valid - K
        sel = valid
        for i in tl.static_range(DROP):
            lowest = tl.min(packed, axis=0)
            hit = (packed == lowest) & (i < n_drop)
            sel = sel & ~hit
            packed = tl.where(hit, 1 << 62, packed)
        kept = sel.to(tl.int32)
        slot = tl.cumsum(kept, axis=0) - kept
    else:
        if n_valid > K:
            t, n_ties = _kth_key(key, K, 2)
        else:  # every candidate stays
            t = tl.zeros((), dtype=tl.uint32)
            n_ties = tl.zeros((), dtype=tl.int32)
        sel, slot = _compact_slots(key, valid, t, n_ties)
    tl.store(out_row + slot, cand, mask=sel)
    n_sel = tl.minimum(n_valid, K)
    tl.store(out_row + offs_c, tl.full([BLOCK_C], -1, tl.int32), mask=(offs_c < K) & (offs_c >= n_sel))


def refine_pages(q, candidates, page_table, lengths, mean, std, *, k, page_size, mode="unique", lam=0.5,
                 keep_first=False, keep_last=False, sigma=None, method=None):
    """The k best of `candidates` by `mode`'s score over the pool-dtype means `mean` (the cache's rmean):
    int32 [B, Hkv, k] physical ids in ascending logical order, -1 padded. Arguments as `refine_pages_naive`;
    q [B, H, D] contiguous in D; candidates, page_table, lengths, mean, std, sigma contiguous.
    method: how the k are kept, "drop" (remove the C - k lowest, one reduction each; C - k <= MAX_DROP),
    "kth" (the select kernel's k-th-key bisection, 16 reductions) or None: "drop" where it applies."""
    B, H, D, Hkv, G, C = validate_refine(q, candidates, page_table, lengths, mean, std, k, page_size, mode,
                                         sigma)
    if C > MAX_CANDIDATES:
        raise ValueError(f"re-ranking holds at most {MAX_CANDIDATES} candidates in registers, got {C}")
    if q.stride(-1) != 1 or not all(t.is_contiguous() for t in (candidates, page_table, lengths, mean, std)
                                    if t is not None) or (sigma is not None and not sigma.is_contiguous()):
        raise ValueError("q must be contiguous in D; candidates, page_table, lengths, mean, std, sigma contiguous")
    if method not in (None, "drop", "kth"):
        raise ValueError(f"method must be 'drop', 'kth' or None, got {method!r}")
    if method == "drop" and C - k > MAX_DROP:
        raise ValueError(f"method 'drop' removes at most {MAX_DROP} candidates, got C - k = {C - k}")
    block_c = max(16, triton.next_power_of_2(max(C, k)))
    drop = C - k if method == "drop" or (method is None and C - k <= MAX_DROP and block_c <= DROP_BLOCK) else 0
    out = torch.empty(B, Hkv, k, dtype=torch.int32, device=q.device)
    if B == 0:
        return out
    cfg = SelectConfig()
    block_p = cfg.block_p // max(1, SCORES[mode].wide_stats)
    stats, meta, launch = _launch_meta(q, mean, std, sigma, None, None, None, mode, page_size, block_p, cfg)
    scores = torch.empty(B * Hkv * C, dtype=torch.float32, device=q.device)
    _refine_kernel[(B * Hkv,)](
        q, q.stride(0), q.stride(1), candidates, page_table, lengths, page_table.shape[1], *stats, scores, out, k,
        C, float(lam), **meta, BLOCK_C=block_c, KEEP_FIRST=bool(keep_first), KEEP_LAST=bool(keep_last),
        DROP=drop, **launch)
    return out
