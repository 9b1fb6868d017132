"""The `window` attention mode: the sliding-window baseline for page-sparse decode attention.

No scoring: each sequence reads its first page (the sink: the prompt's head) and its most recent pages, k pages
in all (k = SparsityConfig.top_k), the same pages for every KV head. Published work on long-form speech-LLMs
reports that their attention is largely local; this is the cheap baseline UNIQUE must beat in selection
quality and match in speed. All of the mode's selection logic is this one function.
"""

from __future__ import annotations

import torch

SINK_PAGES = 1


def window_pages(page_table: torch.Tensor, lengths: torch.Tensor, *, k: int, page_size: int,
                 num_kv_heads: int) -> torch.Tensor:
    """int32 [B, Hkv, k] physical page ids in ascending logical order, -1 padded: logical pages
    [0, SINK_PAGES) and the last k - SINK_PAGES held pages (every held page when a sequence holds <= k).

    page_table int32 [B, max_pages] (-1 padded); lengths int [B] tokens held. Device-only (no host sync), so a
    captured decode step can run it."""
    n_pages = (lengths.long() + page_size - 1) // page_size                  # [B]
    j = torch.arange(k, device=page_table.device)                            # [k]
    sink = min(SINK_PAGES, k - 1) if k > 1 else 0
    recent = n_pages[:, None] - k + j[None, :]                               # [B, k]
    logical = torch.where(n_pages[:, None] <= k, j[None, :], torch.where(j[None, :] < sink, j[None, :], recent))
    held = logical < n_pages[:, None]
    phys = page_table.long().gather(1, logical.clamp(0, page_table.shape[1] - 1))
    out = torch.where(held, phys, -1).to(torch.int32)
    return out[:, None, :].expand(-1, num_kv_heads, -1).contiguous()
