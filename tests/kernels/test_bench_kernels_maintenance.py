"""scripts/bench_kernels.py page-stat maintenance: the two append arms write the same token into the same
slot on every call (replay-safe), only the stats arm refreshes the page statistics; the stats_maintenance
record's arithmetic and its --report table."""

from __future__ import annotations

import pytest
import torch
from script_loader import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_kernels")


def page_keys(cache):
    """Keys [B, S, Hkv, D] of each sequence's one page, in fp32."""
    return cache.layer(0).k_pool[cache.page_table[:, 0].long()].float()


def test_append_arms_redo_one_token_into_the_last_slot_with_exact_page_stats(bench):
    B, Hkv, D, S = 3, 2, 16, 4
    torch.manual_seed(0)
    arms, cache = bench.append_arms(B, Hkv, D, S, dtype=torch.float32, device="cpu")
    stats = cache.layer(0).stats
    pages = cache.page_table[:, 0].long()
    for _ in range(3):  # repeated calls (graph replays) redo the same write from the same accumulator
        arms["append_kv_stats"]()
    keys = page_keys(cache)
    torch.testing.assert_close(stats.mean[pages], keys.mean(1))
    torch.testing.assert_close(stats.std[pages], ((keys - keys.mean(1, keepdim=True)) ** 2).sum(-1).mean(1).sqrt())
    new_k = keys[:, S - 1].clone()
    mean, std = stats.mean.clone(), stats.std.clone()
    cache.layer(0).k_pool[pages, S - 1] = 0
    arms["append_kv_plain"]()
    torch.testing.assert_close(page_keys(cache)[:, S - 1], new_k, atol=0, rtol=0)
    assert torch.equal(stats.mean, mean) and torch.equal(stats.std, std)  # plain arm: no statistics
    assert cache.num_free_pages == 0 and cache.lengths.tolist() == [S] * B


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_append_arms_replayed_as_cuda_graphs(bench):
    B, Hkv, D, S = 4, 8, 128, 8
    arms, cache = bench.append_arms(B, Hkv, D, S)
    graphs = {name: bench.capture(fn) for name, fn in arms.items()}
    for _ in range(5):
        graphs["append_kv_stats"].replay()
    torch.cuda.synchronize()
    keys = page_keys(cache)
    pages = cache.page_table[:, 0].long()
    torch.testing.assert_close(cache.layer(0).stats.mean[pages].float(), keys.mean(1), atol=2e-2, rtol=2e-2)


def fake_shape_records(bench, B, N, stats_ms, plain_ms):
    args = bench.parse_args([])
    med = {"sdpa_flash": 1.0, "sdpa_cudnn": 0.8, "triton_dense_paged": 0.9, "unique_step": 0.1,
           "unique_select": 0.04, "unique_attention": 0.06, "quest_step": 0.2,
           "append_kv_stats": stats_ms, "append_kv_plain": plain_ms}
    samples = {a: [m, m] for a, m in med.items()}
    return bench.shape_records(med, samples, {}, {}, B, N, args, 4.0, "naive")


def test_maintenance_record_is_overhead_over_best_dense(bench):
    recs = fake_shape_records(bench, 80, 32768, stats_ms=0.05, plain_ms=0.01)
    assert not any(r["arm"] in bench.APPEND_ARMS for r in recs)  # no bandwidth-floor record for appends
    (m,) = [r for r in recs if r["arm"] == "stats_maintenance"]
    assert m["best_dense_arm"] == "sdpa_cudnn" and m["best_dense_ms"] == 0.8
    assert m["stats_overhead_ms"] == pytest.approx(0.04)
    assert m["stats_share_of_dense"] == pytest.approx(0.05)
    assert m["round_medians_ms"] == {"append_kv_stats": [0.05, 0.05], "append_kv_plain": [0.01, 0.01]}
    assert bench.maintenance_records({"sdpa_flash": 1.0, "append_kv_stats": 0.05}, {}, 1, 8192) == []


def test_report_prints_the_maintenance_table_only_when_measured(bench):
    recs = fake_shape_records(bench, 80, 32768, 0.05, 0.01) + fake_shape_records(bench, 1, 8192, 0.02, 0.016)
    report = bench.markdown_report(recs).splitlines()
    assert "| 1 | 8K | 0.8000 (sdpa_cudnn) | 0.0200 | 0.0160 | 0.0040 | 0.5% |" in report
    assert report[-1] == "| 80 | 32K | 0.8000 (sdpa_cudnn) | 0.0500 | 0.0100 | 0.0400 | 5.0% |"
    old = [r for r in recs if r["arm"] != "stats_maintenance"]
    assert "share of dense" not in bench.markdown_report(old)
