"""Selection-quality metrics: how well a page selection covers exact softmax attention over one memory.

One memory is a contiguous key/value sequence of F frames (e.g. a Whisper window's cross K/V) cut into
pages of S frames (identity page table: physical page id == logical page id; the last page may be partial).
For N queries per head the exact attention is decomposed per page once (`page_attention`); the metrics of
any selection are then gathers over that decomposition (`selection_metrics`):
  recall    |selected ∩ oracle top-k| / |oracle top-k|  (oracle = pages with the largest softmax mass)
  captured  sum of the true attention probability over the selected pages' frames
  rel_error ||o_sparse - o_dense|| / ||o_dense||, o_sparse = exact softmax over the selected frames only
            (SparsityConfig.unselected="drop", the published method)
  rel_error_estimate  the same with o_sparse from SparsityConfig.unselected="estimate" (each unselected page
            one softmax term from its key and value means; `estimate_error`).
Statistics and scores come from the kernels' PyTorch twins (the spec).
"""

from __future__ import annotations

import torch

from unique_asr.kernels.page_stats import WORK_COLUMNS, PageStats, StatAccumulators, append_kv_naive
from unique_asr.kernels.sparse_decode.naive import sparse_decode_attention_estimate_naive


def paged_window(k: torch.Tensor, v: torch.Tensor, page_size: int):
    """Page one memory and build its statistics with the append twin (`append_kv_naive`).

    k, v: [F, H, D] float. Returns (k_pool, v_pool [P, S, H, D] fp32 zero-padded, stats: PageStats with
    mean / sigma / kmin / kmax / vmean [P, H, D] fp32 and std [P, H] fp32, page_table int32 [1, P] (identity),
    lengths int32 [1] = [F]).
    """
    if k.dim() != 3 or v.shape != k.shape:
        raise ValueError(f"expected k, v [F, H, D], got {tuple(k.shape)} and {tuple(v.shape)}")
    F, H, D = k.shape
    P = -(-F // page_size)
    pool = lambda: torch.zeros(P, page_size, H, D)
    k_pool, v_pool = pool(), pool()
    stats = PageStats(pool()[:, 0].clone(), torch.zeros(P, H), pool()[:, 0].clone(), pool()[:, 0].clone(),
                      pool()[:, 0].clone(), vmean=pool()[:, 0].clone())
    acc = StatAccumulators(torch.zeros(1, H, D), torch.zeros(1, H), torch.zeros(1, H, D), torch.zeros(1, H, D))
    start = torch.arange(P) * page_size
    n_new = (F - start).clamp(max=page_size)
    work = torch.zeros(P, len(WORK_COLUMNS), dtype=torch.int32)
    col = {name: i for i, name in enumerate(WORK_COLUMNS)}
    work[:, col["page"]], work[:, col["tok_start"]], work[:, col["n_new"]] = torch.arange(P), start, n_new
    work[-1, col["is_last"]] = 1
    append_kv_naive(k.float(), v.float(), work, k_pool, v_pool, stats, acc, acc)
    table = torch.arange(P, dtype=torch.int32)[None]
    return k_pool, v_pool, stats, table, torch.tensor([F], dtype=torch.int32)


def page_attention(q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, length: int,
                   scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact softmax attention of queries over one paged memory, split per page.

    q: [N, H, D]; k_pool, v_pool: [P, S, H, D] holding `length` frames (Hkv = H). scale defaults to
    1/sqrt(D). Returns mass fp32 [N, H, P] (softmax probability of each page, sums to 1) and partial fp32
    [N, H, P, D] (sum over the page's frames of probability * value; summing over P gives o_dense).
    """
    P, S, _, D = k_pool.shape
    logits = torch.einsum("nhd,pshd->nhps", q.float(), k_pool.float()) * (scale or D ** -0.5)
    frame = torch.arange(P * S).view(P, S)
    logits = logits.masked_fill(frame >= length, -torch.inf)
    probs = torch.softmax(logits.flatten(-2), -1).view_as(logits)
    return probs.sum(-1), torch.einsum("nhps,pshd->nhpd", probs, v_pool.float())


def _page_mask(ids: torch.Tensor, num_pages: int) -> torch.Tensor:
    """bool [N, H, P] from page ids int [N, H, k] (-1 = padding)."""
    mask = torch.zeros(*ids.shape[:-1], num_pages + 1, dtype=torch.bool)
    mask.scatter_(-1, ids.long().where(ids >= 0, num_pages), True)
    return mask[..., :num_pages]


def selection_metrics(selected: torch.Tensor, oracle: torch.Tensor, mass: torch.Tensor,
                      partial: torch.Tensor) -> dict[str, torch.Tensor]:
    """Recall, captured mass and output error of a selection, per (query, head).

    selected, oracle: int [N, H, k] page ids (-1 padded) of the method and of the oracle top-k (the k pages
    of largest mass); mass fp32 [N, H, P] and partial fp32 [N, H, P, D] from `page_attention`.
    Returns fp32 [N, H] tensors: "recall", "captured", "rel_error".
    """
    P = mass.shape[-1]
    sel, best = _page_mask(selected, P), _page_mask(oracle, P)
    recall = (sel & best).sum(-1) / best.sum(-1).clamp(min=1)
    captured = (mass * sel).sum(-1)
    dense = partial.sum(-2)
    sparse = (partial * sel[..., None]).sum(-2) / captured.clamp(min=torch.finfo(torch.float32).tiny)[..., None]
    rel_error = (sparse - dense).norm(dim=-1) / dense.norm(dim=-1)
    return {"recall": recall.float(), "captured": captured, "rel_error": rel_error}


def estimate_error(q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, stats: PageStats, selected: torch.Tensor,
                   length: int, partial: torch.Tensor) -> torch.Tensor:
    """rel_error of the "estimate" output (exact over the selected pages, one page-mean term per unselected page;
    `sparse_decode_attention_estimate_naive`) against dense: fp32 [N, H]. q [N, H, D]; pools and stats from
    `paged_window`; selected int [N, H, k] page ids; partial from `page_attention` (its page sum is o_dense)."""
    N = q.shape[0]
    table = torch.arange(k_pool.shape[0], dtype=torch.int32)[None].expand(N, -1)
    lengths = torch.full((N,), length, dtype=torch.int32)
    out = sparse_decode_attention_estimate_naive(q.float(), k_pool, v_pool, selected.to(torch.int32), table, lengths,
                                                 stats.mean, stats.vmean)
    dense = partial.sum(-2)
    return (out - dense).norm(dim=-1) / dense.norm(dim=-1)
