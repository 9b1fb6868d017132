"""The score registry is the one source of truth: config modes, cache statistics, kernel dispatch and the
reference scores all follow it, and modes a kernel does not implement are refused with a clear error."""

from __future__ import annotations

import pytest
import torch
from unique_asr.kernels.page_stats import PageStats
from unique_asr.kernels.select_pages import select_pages, select_pages_naive
from unique_asr.kernels.select_pages.registry import (
    BASE_STATISTICS,
    SCORES,
    STATISTICS,
    get_score,
    require,
    scores_for,
    statistics_for,
)
from unique_asr.kernels.select_pages.triton import MODE_IDS

from unique_asr.cache import PagedKVCache
from unique_asr.config import ATTENTION_MODES, SparsityConfig
from unique_asr.models.cross_memory import SoftGateConfig


def test_every_table_derives_from_the_registry():
    assert ATTENTION_MODES == ("dense", *scores_for("select"), "window")  # window: no score (window_pages)
    assert set(MODE_IDS) == set(scores_for("select"))
    assert len(set(MODE_IDS.values())) == len(MODE_IDS)                 # one kernel branch per score
    assert tuple(STATISTICS) == PageStats._fields                       # the cache keeps them in this order
    for score in SCORES.values():
        assert callable(score.reference_fn) and set(score.stats) <= set(STATISTICS)


def test_cache_keeps_the_statistics_its_modes_read():
    for modes in [("unique",), ("dense",), ("quest",), ("perdim", "quest"), tuple(SCORES)]:
        cache = PagedKVCache(num_layers=1, num_pages=4, page_size=4, num_kv_heads=2, head_dim=8, max_batch=1,
                             modes=modes)
        assert cache.statistics == statistics_for(modes)
        kept = {name for name in STATISTICS if getattr(cache, name) is not None}
        assert kept == set(BASE_STATISTICS) | {s for m in modes if m in SCORES for s in SCORES[m].stats}
    with pytest.raises(ValueError, match="not dense or one of"):
        PagedKVCache(num_layers=1, num_pages=4, page_size=4, num_kv_heads=2, head_dim=8, max_batch=1,
                     modes=("unique", "bogus"))


def test_bytes_per_page():
    assert get_score("unique").bytes_per_page(128) == 128 * 2 + 4       # bf16 mean + fp32 std: 260 B
    assert get_score("quest").bytes_per_page(128) == 2 * 128 * 2
    assert get_score("mean").bytes_per_page(64, pool_bytes=4) == 256


def test_unsupported_modes_are_refused_clearly():
    with pytest.raises(ValueError, match="'bogus' is not one of dense, unique"):
        SparsityConfig(mode="bogus")
    with pytest.raises(ValueError, match="soft-mask|softmask"):
        SoftGateConfig(mode="soft", score="quest")
    assert SoftGateConfig(mode="soft").score == "unique"
    with pytest.raises(ValueError, match="implements page scores"):
        require("oracle", "select")
    q = torch.randn(1, 2, 8)
    table, lens = torch.zeros(1, 1, dtype=torch.int32), torch.tensor([3], dtype=torch.int32)
    mean, std = torch.randn(1, 2, 8), torch.rand(1, 2)
    with pytest.raises(ValueError, match="the select kernel implements page scores"):
        select_pages(q, table, lens, mean, std, k=1, page_size=4, mode="oracle")
    with pytest.raises(ValueError, match="needs k_pool"):
        select_pages_naive(q, table, lens, mean, std, k=1, page_size=4, mode="oracle")
