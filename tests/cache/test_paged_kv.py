"""PagedKVCache bookkeeping: allocation, lengths advancing once per step, release/reuse, full-pool errors."""

from __future__ import annotations

import pytest
import torch

from unique_asr.cache import CacheFullError, PagedKVCache
from unique_asr.errors import UniqueASRError


def make(pages=10, B=3, S=4, max_pages=None, L=2, modes=("unique",)):
    return PagedKVCache(num_layers=L, num_pages=pages, page_size=S, num_kv_heads=2, head_dim=8, max_batch=B,
                        max_pages_per_seq=max_pages, dtype=torch.float32, modes=modes, backend="torch")


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
    assert cache.lengths.tolist() == [8, 4, 3]
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
    plain, full = make(), make(modes=("unique", "perdim", "quest"))
    assert plain.sigma is None and plain.kmin is None and plain.acc_m2d is None
    assert full.sigma.shape == full.kmin.shape == full.kmax.shape == full.mean.shape == (2, 10, 2, 8)
    assert full.layer(1).stats.sigma.data_ptr() == full.sigma[1].data_ptr()
    with pytest.raises(ValueError):
        make(pages=0)
