"""Decode-step attention over a paged KV cache: page selection (UNIQUE or a baseline score) then exact
softmax over the selected pages (with sparsity.unselected="estimate", plus one page-mean term per unselected
page), or dense paged attention, by SparsityConfig and backend."""

from __future__ import annotations

import functools

import torch

from unique_asr.attention.registry import AttentionBackend, get_backend
from unique_asr.cache import LayerCache
from unique_asr.config import SparsityConfig


def select_decode_pages(q, cache_layer: LayerCache, page_table, lengths, sparsity: SparsityConfig,
                        backend: AttentionBackend) -> torch.Tensor:
    """int32 [B, Hkv, k] physical page ids (-1 padded) chosen by sparsity.mode; k = sparsity.top_k.

    A sequence holding <= k pages selects all of them, so `dense_when_fits` holds by construction. With
    sparsity.refine, the coded means select k + refine candidates and the KV-dtype means (rmean) keep k."""
    stats = cache_layer.stats
    flags = dict(page_size=sparsity.page_size, mode=sparsity.mode, lam=sparsity.lam,
                 keep_first=sparsity.keep_first, keep_last=sparsity.keep_last, sigma=stats.sigma)
    select = functools.partial(backend.select, q, page_table, lengths, stats.mean, stats.std, kmin=stats.kmin,
                               kmax=stats.kmax, scale=stats.scale, **flags)
    if not sparsity.refining:
        return select(k=sparsity.top_k)
    if stats.rmean is None:
        raise ValueError("refine re-ranks with the KV-dtype key means: build the cache with "
                         "extra_statistics=sparsity.extra_statistics")
    candidates = select(k=sparsity.top_k + sparsity.refine)
    return backend.refine(q, candidates, page_table, lengths, stats.rmean, stats.std, k=sparsity.top_k, **flags)


def paged_decode_attention(
    q: torch.Tensor,
    cache_layer: LayerCache,
    page_table: torch.Tensor,
    lengths: torch.Tensor,
    sparsity: SparsityConfig,
    *,
    layer_index: int = 0,
    backend: AttentionBackend | str | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """One decode query per sequence and head against the paged cache of one layer.

    q [B, H, D] (bf16/fp16; fp32 on the torch backends); cache_layer: k_pool, v_pool [P, S, Hkv, D] and
    their PageStats; page_table int32 [B, max_pages] (-1 padded); lengths int32 [B]; backend: an
    AttentionBackend, a registry name, or None for sparsity.backend. Returns [B, H, D] in q.dtype.
    Dense when sparsity.mode is "dense", the backend is "dense", or layer_index < sparsity.dense_layers.
    """
    if cache_layer.k_pool.shape[1] != sparsity.page_size:
        raise ValueError(f"cache page size {cache_layer.k_pool.shape[1]} != sparsity.page_size {sparsity.page_size}")
    if not isinstance(backend, AttentionBackend):
        backend = get_backend(backend or sparsity.backend, q.device, q.dtype)
    k_pool, v_pool = cache_layer.k_pool, cache_layer.v_pool
    if backend.select is None or not sparsity.sparse or layer_index < sparsity.dense_layers:
        return backend.dense(q, k_pool, v_pool, page_table, lengths, scale)
    if sparsity.mode == "window":  # sink + most recent pages, no scoring
        page_ids = backend.window(page_table, lengths, k=sparsity.top_k, page_size=sparsity.page_size,
                                  num_kv_heads=k_pool.shape[2])
    else:
        page_ids = select_decode_pages(q, cache_layer, page_table, lengths, sparsity, backend)
    if sparsity.unselected == "estimate":
        stats = cache_layer.stats
        if stats.vmean is None:
            raise ValueError("unselected='estimate' reads the pages' value means: build the cache with "
                             "extra_statistics=sparsity.extra_statistics")
        # the unselected pages' key means: the KV-dtype copy where refine keeps one, else the codes + scale
        key_mean, key_scale = (stats.rmean, None) if stats.rmean is not None else (stats.mean, stats.scale)
        return backend.estimate(q, k_pool, v_pool, page_ids, page_table, lengths, key_mean, stats.vmean,
                                key_scale=key_scale, scale=scale)
    return backend.sparse(q, k_pool, v_pool, page_ids, page_table, lengths, scale)
