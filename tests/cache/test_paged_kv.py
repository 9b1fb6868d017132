"""PagedKVCache bookkeeping: allocation, lengths advancing once per step, release/reuse, full-pool errors."""

from __future__ import annotations

import pytest
import torch
from unique_asr.kernels._checks import canonical_device
from unique_asr.kernels.select_pages.registry import scores_for

from unique_asr.cache import CacheFullError, PagedKVCache
from unique_asr.errors import UniqueASRError

SELECT_MODES = scores_for("select")  # every score the decode kernel runs (the registry)


def make(pages=10, B=3, S=4, max_pages=None, L=2, modes=("unique",), extra=(), backend="torch"):
    return PagedKVCache(num_layers=L, num_pages=pages, page_size=S, num_kv_heads=2, head_dim=8, max_batch=B,
                        max_pages_per_seq=max_pages, dtype=torch.float32, modes=modes, backend=backend,
                        extra_statistics=extra)


# The Triton append continues each open page from the accumulators a row carries (the torch spec re-reads the
# page), so moving rows (share, snapshot) is only checked for real with it: every accumulator must move.
MOVES = pytest.mark.parametrize("extra, backend", [((), "torch"), (("vmean",), "torch"), (("vmean",), "triton")],
                                ids=["scores", "value-means", "value-means-triton"])


def held(cache, b):
    row = cache.page_table[b].tolist()
    return [p for p in row if p >= 0]


def test_tokens_land_in_their_pages_and_lengths_advance_once_per_step():
    cache = make()
    counts = [[6, 0, 1], [1, 3, 1], [1, 1, 1]]
    written = {b: [] for b in range(3)}
    for step in counts:
        plan = cache.reserve(step)
        k = torch.randn(sum(step), 2, 8)
        for layer in range(2):
            cache.append(layer, plan, k + layer, -k)
        start = 0
        for b, n in enumerate(step):
            written[b].append(k[start:start + n])
            start += n
    assert cache.lengths.tolist() == [8, 4, 3] == cache.host_lengths().tolist()
    for b in range(3):
        keys = torch.cat(written[b])
        pages = held(cache, b)
        assert len(pages) == -(-keys.shape[0] // 4)
        stored = cache.k_pool[1, pages].reshape(-1, 2, 8)[: keys.shape[0]]
        torch.testing.assert_close(stored, keys + 1)
        torch.testing.assert_close(cache.v_pool[0, pages].reshape(-1, 2, 8)[: keys.shape[0]], -keys)
    all_pages = sum((held(cache, b) for b in range(3)), [])
    assert len(set(all_pages)) == len(all_pages) == 10 - cache.num_free_pages


def test_release_returns_pages_for_reuse():
    cache = make(pages=4)
    plan = cache.reserve([8, 8, 0])
    for layer in range(2):
        cache.append(layer, plan, torch.randn(16, 2, 8), torch.randn(16, 2, 8))
    first = held(cache, 0)
    assert cache.num_free_pages == 0
    with pytest.raises(CacheFullError):
        cache.reserve([0, 0, 1])
    cache.release([0])
    assert cache.lengths.tolist() == [0, 8, 0] and held(cache, 0) == [] and cache.num_free_pages == 2
    plan = cache.reserve([0, 0, 5])
    assert sorted(held(cache, 2)) == sorted(first) and cache.lengths.tolist() == [0, 8, 5]
    for layer in range(2):
        cache.append(layer, plan, torch.randn(5, 2, 8), torch.randn(5, 2, 8))


def test_full_pool_error_changes_nothing():
    cache = make(pages=3, max_pages=2)
    cache.reserve([4, 4, 0])
    table, lengths, free = cache.page_table.clone(), cache.lengths.clone(), cache.num_free_pages
    with pytest.raises(CacheFullError, match="pool full"):
        cache.reserve([1, 1, 0])
    with pytest.raises(CacheFullError, match="page table"):
        cache.reserve([0, 0, 9])
    assert isinstance(CacheFullError("x"), UniqueASRError)
    assert torch.equal(cache.page_table, table) and torch.equal(cache.lengths, lengths)
    assert cache.num_free_pages == free


def test_plan_misuse_is_rejected():
    cache = make()
    stale = cache.reserve([1, 1, 1])
    cache.reserve([1, 1, 1])
    with pytest.raises(ValueError, match="stale"):
        cache.append(0, stale, torch.randn(3, 2, 8), torch.randn(3, 2, 8))
    plan = cache.reserve([2, 0, 0])
    with pytest.raises(ValueError, match="for this plan"):
        cache.append(0, plan, torch.randn(3, 2, 8), torch.randn(3, 2, 8))
    with pytest.raises(ValueError, match="for this plan"):
        cache.append(0, plan, torch.randn(2, 2, 8), torch.randn(2, 2, 4))
    with pytest.raises(ValueError):
        cache.reserve([1, -1, 0])
    with pytest.raises(ValueError):
        cache.reserve([1, 1])
    with pytest.raises(ValueError, match="per layer"):
        cache.extend([1, 0, 0], [(torch.randn(1, 2, 8), torch.randn(1, 2, 8))])


def test_decode_plans_keep_one_device_address():
    """Static addresses for CUDA-graph capture: every decode plan's work list is the same buffer."""
    cache = make(pages=30)
    cache.reserve([5, 9, 2])
    plans = [cache.reserve([1, 1, 1]) for _ in range(3)]
    assert len({p.work.data_ptr() for p in plans}) == 1
    assert plans[-1].work[:, 0].tolist() == [0, 1, 2] and cache.lengths.tolist() == [8, 12, 5]
    big = cache.reserve([40, 0, 0])  # 10 pages of 4: more work items than the decode buffer holds
    assert big.work.shape[0] == 10 and big.work[:, 3].sum().item() == 40
    assert big.work.data_ptr() != plans[0].work.data_ptr()


def test_optional_stats_follow_modes():
    plain, full = make(), make(modes=SELECT_MODES)
    assert plain.sigma is None and plain.kmin is None and plain.acc_m2d is None
    assert full.sigma.shape == full.kmin.shape == full.kmax.shape == full.mean.shape == (2, 10, 2, 8)
    assert full.layer(1).stats.sigma.data_ptr() == full.sigma[1].data_ptr()
    with pytest.raises(ValueError):
        make(pages=0)


def test_device_specs_compare_by_type_and_index(monkeypatch):
    """A cache made with "cpu:0" (as one made with "cuda" on cuda:0) accepts the tensors living there."""
    cache = PagedKVCache(num_layers=1, num_pages=4, page_size=4, num_kv_heads=2, head_dim=8, max_batch=1,
                         dtype=torch.float32, device="cpu:0", backend="torch")
    assert cache.device == torch.device("cpu") == cache.k_pool.device
    plan = cache.reserve([3])
    cache.append(0, plan, torch.randn(3, 2, 8), torch.randn(3, 2, 8))
    with pytest.raises(ValueError, match="on cpu"):
        cache.append(0, plan, torch.randn(3, 2, 8, device="meta"), torch.randn(3, 2, 8))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert canonical_device("cuda") == torch.device("cuda", 1) == canonical_device("cuda:1")
    assert canonical_device("cuda:0") != canonical_device("cuda")


def test_evict_drops_front_pages_after_the_sinks():
    cache = make(pages=12, B=2, modes=SELECT_MODES)
    plan = cache.reserve([23, 9])
    keys = torch.randn(32, 2, 8)
    for layer in range(2):
        cache.append(layer, plan, keys + layer, -keys)
    table, free = cache.page_table.clone(), cache.num_free_pages
    stats = {n: getattr(cache, n)[:, table[0, :6].long()].clone() for n in ("mean", "std", "sigma", "kmin")}
    cache.evict(0, 2, 3)  # keep sink pages 0-1, drop 2-4, keep 5 (the partial last page)
    kept = [0, 1, 5]
    assert cache.lengths.tolist() == [11, 9] and cache.num_free_pages == free + 3
    assert cache.page_table[0, :3].tolist() == table[0, kept].tolist()
    assert (cache.page_table[0, 3:] == -1).all()
    assert torch.equal(cache.page_table[1], table[1])
    for name, before in stats.items():
        assert torch.equal(getattr(cache, name)[:, cache.page_table[0, :3].long()], before[:, kept])
    for bad in [(0, 1, 2), (0, 0, 0), (1, 0, 3), (0, -1, 1)]:  # last page, empty, too many, negative
        with pytest.raises(ValueError, match="cannot evict"):
            cache.evict(*bad)
    plan = cache.reserve([9, 0])  # 11 + 9 = 20 tokens: the open page fills, then 2 more pages
    for layer in range(2):
        cache.append(layer, plan, torch.randn(9, 2, 8), torch.randn(9, 2, 8))
    assert cache.lengths.tolist() == [20, 9] and len(held(cache, 0)) == 5
    freed = set(table[0, 2:5].tolist())
    assert freed >= set(cache.page_table[0, 3:5].tolist())  # the freed pages are reused


def _rows(cache, b):
    """(keys, values) [length, H, D] of row b in logical order, and the statistics of its pages."""
    n = int(cache.lengths[b])
    pages = cache.page_table[b, : -(-n // cache.page_size)].long()
    kv = [pool[:, pages].flatten(1, 2)[:, :n] for pool in (cache.k_pool, cache.v_pool)]
    stats = {name: getattr(cache, name)[:, pages] for name in cache.statistics}
    return kv, stats


def _grow(cache, counts, keys):
    """Append keys[b] (a list of [n, H, D] chunks per step) to the rows named in counts."""
    plan = cache.reserve(counts)
    k = torch.cat([keys[b] for b, n in enumerate(counts) if n])
    for layer in range(cache.k_pool.shape[0]):
        cache.append(layer, plan, k + layer, -k)


def _equal_rows(shared, b, alone, a):
    (k1, v1), s1 = _rows(shared, b)
    (k2, v2), s2 = _rows(alone, a)
    assert torch.equal(k1, k2) and torch.equal(v1, v2)
    for name in s1:
        torch.testing.assert_close(s1[name], s2[name], rtol=1e-5, atol=1e-6, msg=name)


@MOVES
def test_shared_rows_copy_the_partial_page_on_write_and_keep_their_statistics(extra, backend):
    modes = SELECT_MODES
    cache = make(pages=16, B=4, modes=modes, extra=extra, backend=backend)
    alone = make(pages=16, B=4, modes=modes, extra=extra, backend=backend)
    prefix = torch.randn(6, 2, 8)
    _grow(cache, [6, 0, 0, 0], {0: prefix})
    cache.share([1, 2], [0, 0])  # two beams of row 0's sequence: page 0 full, page 1 partial (2 of 4)
    refs = cache.references()
    assert refs[cache.page_table[0, :2].long()].tolist() == [3, 3] and cache.num_free_pages == 14
    assert torch.equal(cache.page_table[1], cache.page_table[0]) and cache.lengths.tolist() == [6, 6, 6, 0]
    own = {b: torch.randn(3, 2, 8) for b in range(3)}
    for step in range(3):
        _grow(cache, [1, 1, 1, 0], {b: own[b][step:step + 1] for b in range(3)})
    # the full page stays shared; rows 0 and 1 copied the partial page, row 2 (its last holder) kept it
    assert cache.page_table[:3, 0].unique().numel() == 1 and cache.page_table[:3, 1].unique().numel() == 3
    assert cache.num_free_pages == 16 - 1 - 3 - 3
    for b in range(3):
        _grow(alone, [6 if a == b else 0 for a in range(4)], {b: prefix})
        for step in range(3):
            _grow(alone, [1 if a == b else 0 for a in range(4)], {b: own[b][step:step + 1]})
        _equal_rows(cache, b, alone, b)
    cache.release([0, 1, 2])
    assert cache.references().sum() == 0 and cache.num_free_pages == 16


@MOVES
def test_share_reorders_rows_and_snapshots_hold_pages_until_dropped(extra, backend):
    """Every open-page accumulator (the value means' too) moves with a shared, snapshotted or restored row."""
    cache = make(pages=24, B=3, modes=SELECT_MODES, extra=extra, backend=backend)
    alone = make(pages=24, B=3, modes=SELECT_MODES, extra=extra, backend=backend)
    a, b = torch.randn(5, 2, 8), torch.randn(3, 2, 8)
    _grow(cache, [5, 3, 0], {0: a, 1: b})
    cache.share([0, 1, 2], [1, 0, 0])  # a permutation with a duplicate: read before written
    assert cache.lengths.tolist() == [3, 5, 5]
    snap = cache.snapshot(1)  # row 1 = a, held apart
    extra = torch.randn(4, 2, 8)
    _grow(cache, [0, 4, 0], {1: extra})
    cache.share([1], [0])  # row 1's own pages now only in the snapshot (and row 2 for the shared ones)
    cache.load_snapshot(0, snap)
    cache.drop_snapshot(snap)
    _grow(alone, [5, 0, 0], {0: a})
    _equal_rows(cache, 0, alone, 0)
    _equal_rows(cache, 2, alone, 0)
    tail = torch.randn(2, 2, 8)
    _grow(cache, [2, 0, 2], {0: tail, 2: tail})
    _grow(alone, [2, 0, 0], {0: tail})
    _equal_rows(cache, 0, alone, 0)
    _equal_rows(cache, 2, alone, 0)
    cache.release([0, 1, 2])
    assert cache.references().sum() == 0 and cache.num_free_pages == 24


def test_copy_on_write_counts_toward_a_full_pool_and_changes_nothing():
    cache = make(pages=2, B=2, S=4, modes=("unique",))
    _grow(cache, [2, 0], {0: torch.randn(2, 2, 8)})
    cache.share([1], [0])
    table, lengths, refs = cache.page_table.clone(), cache.lengths.clone(), cache.references()
    with pytest.raises(CacheFullError, match="2 pages needed, 1 free"):  # a copy of the shared page + a new one
        cache.reserve([3, 0])
    assert torch.equal(cache.page_table, table) and torch.equal(cache.lengths, lengths)
    assert (cache.references() == refs).all() and cache.num_free_pages == 1
    _grow(cache, [2, 0], {0: torch.randn(2, 2, 8)})  # fits: the copy fills the last free page
    assert cache.num_free_pages == 0 and cache.references().tolist() == [1, 1]


@pytest.mark.parametrize("stats_dtype, extra", [("pool", ()), ("int8", ("rmean",)), ("fp8", ("vmean",))])
def test_nbytes_counts_what_the_cache_holds_and_a_meta_cache_sizes_it(stats_dtype, extra):
    """nbytes = the bytes of every tensor the cache allocated; the same cache on the meta device (nothing
    allocated) reports the same, so a benchmark can size a cache with coded means before building it."""
    kw = dict(num_layers=2, num_pages=12, page_size=4, num_kv_heads=2, head_dim=16, max_batch=3,
              dtype=torch.bfloat16, modes=("unique", "quest"), stats_dtype=stats_dtype, extra_statistics=extra)
    cache = PagedKVCache(**kw)
    held = [t for t in vars(cache).values() if isinstance(t, torch.Tensor)]
    assert cache.nbytes == sum(t.numel() * t.element_size() for t in held)
    assert PagedKVCache(**kw, device="meta").nbytes == cache.nbytes
    if stats_dtype != "pool":  # one-byte means instead of two, plus a fp32 scale per page and head
        plain = PagedKVCache(**{**kw, "stats_dtype": "pool", "extra_statistics": ()}).nbytes
        per_page_head = 2 * 12 * 2  # layers x pages x heads
        extra_bytes = sum(16 * 2 for s in extra)  # rmean / vmean: D values in the pool dtype
        assert cache.nbytes - plain == per_page_head * (-16 + 4 + extra_bytes) + (
            2 * 2 * 3 * 2 * 16 * 4 if "vmean" in extra else 0)  # vmean's accumulators: [L, 2, B, H, D] fp32


def test_upload_copies_host_arrays_into_new_and_given_tensors():
    import numpy as np

    from unique_asr.cache.paged_kv import upload

    a = np.arange(12, dtype=np.int32).reshape(3, 4)[:, ::2]  # a strided view: copied contiguous
    assert torch.equal(upload(a, "cpu"), torch.tensor([[0, 2], [4, 6], [8, 10]], dtype=torch.int32))
    out = torch.zeros(3, 2, dtype=torch.int32)
    assert upload(a, "cpu", out=out) is out and out.tolist() == [[0, 2], [4, 6], [8, 10]]
    assert upload(np.zeros(0, dtype=np.int64), "cpu").shape == (0,)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_reserve_does_not_wait_for_the_device_queue():
    """A decode step's reserve (page table, lengths, work list to the GPU) returns while earlier work still runs
    on the stream (pinned, stream-ordered copies; a pageable copy would wait for the queue first), and the device
    then sees exactly the planned state."""
    cache = PagedKVCache(num_layers=1, num_pages=64, page_size=4, num_kv_heads=2, head_dim=8, max_batch=3,
                         dtype=torch.float16, device="cuda")
    cache.reserve([3, 5, 0])
    torch.cuda.synchronize()
    stream = torch.cuda.current_stream()
    torch.cuda._sleep(200_000_000)  # ~0.1 s of device work ahead of the copies
    plan = cache.reserve([1, 1, 2])  # row 2 takes its first page: a page-table row changes too
    assert not stream.query(), "reserve waited for the device queue"
    torch.cuda.synchronize()
    assert cache.lengths.tolist() == cache.host_lengths().tolist() == [4, 6, 2]
    for b in range(3):
        assert held(cache, b) == [p for p in cache._table[b].tolist() if p >= 0]
    assert plan.work.shape[0] == 3 and plan.idle.numel() == 0
