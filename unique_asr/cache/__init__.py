"""Paged KV cache with incrementally maintained page statistics.

Conventions shared with the attention kernels (design.md §5):

- Pools: ``k_pool``, ``v_pool`` of shape [L, num_pages, S, Hkv, D] (bf16/fp16/fp32); ``cache.layer(l)``
  gives per-layer views [num_pages, S, Hkv, D]. S = page size, pages are PHYSICAL ids into dim 1.
- ``page_table``: int32 [B, max_pages] of physical page ids, -1 padded; logical page i of sequence b
  holds tokens [i*S, (i+1)*S). ``lengths``: int32 [B] tokens held per sequence; a sequence holds
  ceil(length / S) pages and its last page may be partial.
- Page statistics per (layer, physical page, KV head), always current for every held page (exact for the
  partial last page): ``mean`` [L, num_pages, Hkv, D] in the pool dtype (the copy the score reads),
  ``std`` fp32 [L, num_pages, Hkv] = sqrt(mean_j ||k_j - mu||^2); optional ``sigma`` (per-dim population
  std, pool dtype, mode "perdim"), ``kmin`` / ``kmax`` (pool dtype, mode "quest") and ``vmean`` (the value
  mean, pool dtype, kept with ``extra_statistics=("vmean",)`` for SparsityConfig.unselected="estimate"), each
  [L, num_pages, Hkv, D]. With ``stats_dtype`` "fp8" / "int8" ``mean`` holds one-byte codes and ``scale`` fp32
  [L, num_pages, Hkv] their per-page scale; ``extra_statistics=("rmean",)`` keeps the pool-dtype means beside
  them (SparsityConfig.refine re-ranks the codes' candidates with them). Running fp32 Welford accumulators cover only each sequence's open page.
- Appending: ``plan = cache.reserve(new_tokens)`` once per step (allocates pages, advances ``lengths``),
  then ``cache.append(layer, plan, k, v)`` for every layer with packed k, v [sum(new_tokens), Hkv, D]
  (sequence-major, in batch order). Decode is ``reserve([1] * B)`` with k, v [B, Hkv, D].
- Releasing: ``cache.release(seqs)`` empties whole sequences; ``cache.evict(seq, first, count)`` drops
  logical pages [first, first + count) (e.g. the oldest after ``first`` sink pages) and shifts the rest up.
- Sharing (beam search): ``cache.share(dst, src)`` makes rows copies of other rows by page reference;
  ``snapshot(row)`` / ``load_snapshot(row, snap)`` / ``drop_snapshot(snap)`` hold a row's sequence apart.
  Pages are reference-counted; a shared partial last page is copied on write (in ``reserve``).
- Selection (unique_asr.kernels.select_pages): ``select_pages(q [B, H, D], page_table, lengths, mean,
  std, k=..., page_size=S, ...)`` returns int32 PHYSICAL page ids [B, Hkv, k], -1 padded (fixed k, static
  shape), selected pages listed in ascending logical order; H = G * Hkv, query head h belongs to KV head
  h // G. A sequence holding <= k pages selects all of them (dense fallback). ``refine_pages(q, candidates,
  page_table, lengths, rmean, std, k=...)`` keeps the best k of a larger selection by the pool-dtype means.
"""

from unique_asr.cache.paged_kv import AppendPlan, CacheFullError, LayerCache, PagedKVCache, RowSnapshot

__all__ = ["AppendPlan", "CacheFullError", "LayerCache", "PagedKVCache", "RowSnapshot"]
