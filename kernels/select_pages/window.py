"""Triton form of the `window` mode's selection (twin and spec: `window_pages_naive`): the sink page and the
most recent pages of each sequence, no scoring.

Why a kernel: the twin is ten small torch ops; in a captured decode step they cost about 34 us a layer
(H100, speech-LLM step at 16 x 40 min: "other" 1012 us a step over 30 layers, BENCHMARKS.md), more than the
attention over the chosen pages. One program per sequence computes the logical pages, gathers their physical
ids and writes them for every KV head.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._pdl import pdl_enter, pdl_launch
from .naive import SINK_PAGES, validate_window


@triton.jit
def _window_kernel(table_ptr, lengths_ptr, out_ptr, max_pages, K, SINK, S: tl.constexpr, HKV: tl.constexpr,
                   BLOCK_K: tl.constexpr, PDL: tl.constexpr = False):
    pdl_enter(PDL)
    b = tl.program_id(0)
    j = tl.arange(0, BLOCK_K)
    n_pages = (tl.load(lengths_ptr + b).to(tl.int64) + S - 1) // S
    logical = tl.where(n_pages <= K, j, tl.where(j < SINK, j, n_pages - K + j))
    held = (logical < n_pages) & (j < K)
    logical = tl.minimum(tl.maximum(logical, 0), max_pages - 1)
    phys = tl.load(table_ptr + b.to(tl.int64) * max_pages + logical, mask=held, other=-1)
    row = out_ptr + b.to(tl.int64) * HKV * K
    for h in tl.static_range(HKV):
        tl.store(row + h * K + j, phys, mask=j < K)


def window_pages(page_table, lengths, *, k, page_size, num_kv_heads):
    """`window_pages_naive` in one launch: int32 [B, Hkv, k], same arguments; page_table contiguous."""
    validate_window(page_table, lengths, k, page_size, num_kv_heads)
    if not page_table.is_contiguous():
        raise ValueError("page_table must be contiguous")
    B, max_pages = page_table.shape
    out = torch.empty(B, num_kv_heads, k, dtype=torch.int32, device=page_table.device)
    if B == 0 or max_pages == 0:
        return out.fill_(-1)
    sink = min(SINK_PAGES, k - 1) if k > 1 else 0
    _window_kernel[(B,)](page_table, lengths, out, max_pages, k, sink, S=page_size, HKV=num_kv_heads,
                         BLOCK_K=max(16, triton.next_power_of_2(k)), **pdl_launch(page_table))
    return out
