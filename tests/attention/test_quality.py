"""Selection-quality metrics on hand-made memories: oracle selection, full budget, disjoint selection, and
agreement with the kernels' twins (oracle mass) and with dense attention over the selected frames."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest
import torch
from unique_asr.kernels.select_pages import oracle_scores_naive, page_scores_naive, topk_pages_naive

from unique_asr.attention import dense_attention
from unique_asr.attention.quality import page_attention, paged_window, selection_metrics

F, H, D, S = 37, 2, 8, 8  # 5 pages, the last one partial (5 frames)


@pytest.fixture
def memory():
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    k, v = torch.randn(F, H, D, generator=gen) * 2, torch.randn(F, H, D, generator=gen)
    q = torch.randn(6, H, D, generator=gen) * 2
    k_pool, v_pool, stats, table, lengths = paged_window(k, v, S)
    mass, partial = page_attention(q, k_pool, v_pool, F)
    return q, k, v, k_pool, v_pool, stats, table, lengths, mass, partial


def test_stats_match_definition(memory):
    _, k, _, k_pool, _, stats, _, _, _, _ = memory
    last = k[32:]                                                        # the partial page
    assert torch.equal(k_pool[4, :5], last) and not k_pool[4, 5:].any()
    torch.testing.assert_close(stats.mean[4], last.mean(0))
    torch.testing.assert_close(stats.std[4], ((last - last.mean(0)) ** 2).mean(0).sum(-1).sqrt())
    torch.testing.assert_close(stats.kmin[1], k[8:16].amin(0))


def test_mass_is_the_oracle_score(memory):
    q, _, _, k_pool, _, _, table, lengths, mass, _ = memory
    ref = oracle_scores_naive(q, table.expand(q.shape[0], -1), lengths.expand(q.shape[0]), k_pool)
    torch.testing.assert_close(mass, ref)
    torch.testing.assert_close(mass.sum(-1), torch.ones(q.shape[0], H))


def test_oracle_selection_and_full_budget(memory):
    q, _, _, _, _, _, table, lengths, mass, partial = memory
    table_n, lengths_n = table.expand(q.shape[0], -1), lengths.expand(q.shape[0])
    oracle = topk_pages_naive(mass, table_n, lengths_n, k=2, page_size=S)
    m = selection_metrics(oracle, oracle, mass, partial)
    assert torch.equal(m["recall"], torch.ones(q.shape[0], H))
    torch.testing.assert_close(m["captured"], mass.topk(2, -1).values.sum(-1))
    assert (m["rel_error"] > 0).all()
    everything = topk_pages_naive(mass, table_n, lengths_n, k=5, page_size=S)
    full = selection_metrics(everything, everything, mass, partial)
    torch.testing.assert_close(full["captured"], torch.ones(q.shape[0], H))
    assert full["rel_error"].max() < 1e-5


def test_sparse_output_is_softmax_over_selected_frames(memory):
    q, k, v, _, _, stats, table, lengths, mass, partial = memory
    table_n, lengths_n = table.expand(q.shape[0], -1), lengths.expand(q.shape[0])
    scores = page_scores_naive(q, table_n, lengths_n, stats.mean, stats.std, page_size=S)
    chosen = topk_pages_naive(scores, table_n, lengths_n, k=3, page_size=S)
    oracle = topk_pages_naive(mass, table_n, lengths_n, k=3, page_size=S)
    m = selection_metrics(chosen, oracle, mass, partial)
    dense = dense_attention(q[:, None], k[None].expand(q.shape[0], -1, -1, -1), v[None].expand(q.shape[0], -1, -1, -1))
    for n in range(q.shape[0]):
        for h in range(H):
            frames = torch.cat([torch.arange(p * S, min(p * S + S, F)) for p in chosen[n, h].tolist()])
            o = dense_attention(q[n, None, None, h:h + 1], k[None, frames, h:h + 1], v[None, frames, h:h + 1])
            want = (o - dense[n, 0, h]).norm() / dense[n, 0, h].norm()
            torch.testing.assert_close(m["rel_error"][n, h], want[()], rtol=1e-4, atol=1e-5)
            assert m["recall"][n, h] == len(set(chosen[n, h].tolist()) & set(oracle[n, h].tolist())) / 3


def test_disjoint_selection_and_padding():
    mass = torch.tensor([[[0.5, 0.3, 0.2, 0.0]]])
    partial = torch.arange(8.0).view(1, 1, 4, 2) + 1
    m = selection_metrics(torch.tensor([[[2, -1]]]), torch.tensor([[[0, 1]]]), mass, partial)
    assert m["recall"].item() == 0
    assert m["captured"].item() == pytest.approx(0.2)
    dense = partial[0, 0].sum(0)
    assert m["rel_error"].item() == pytest.approx(((partial[0, 0, 2] / 0.2 - dense).norm() / dense.norm()).item())


def load_harness():
    """scripts/selection_quality.py as a module (scripts/ is not a package)."""
    path = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "selection_quality.py"
    spec = importlib.util.spec_from_file_location("selection_quality_script", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_harness_captures_the_step_queries_and_scores_them():
    """Teacher-forced recording gives the queries of step-by-step decoding; the scored records are sane."""
    from unique_asr.models.whisper import SelfAttentionCache, WhisperConfig, WhisperModel

    harness = load_harness()
    config = WhisperConfig(n_audio_ctx=40, n_audio_state=32, n_audio_head=2, n_audio_layer=1, n_vocab=50,
                           n_text_ctx=16, n_text_state=32, n_text_head=2, n_text_layer=2)
    model = WhisperModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
        memory = model.cross_memory(torch.randn(1, 40, 32))
    tokens = torch.randint(0, 50, (1, 7))
    forced, stepped = harness.RecordingMemory(memory, {}), harness.RecordingMemory(memory, {})
    with torch.inference_mode():
        model.decode(tokens, SelfAttentionCache.allocate(config, 1, 7), forced)
        cache, steps = SelfAttentionCache.allocate(config, 1, 7), []
        for i in range(7):
            model.decode(tokens[:, i:i + 1], cache, stepped)
            steps.append(stepped.queries[1])
    torch.testing.assert_close(forced.queries[1], torch.cat(steps, 1), rtol=1e-4, atol=1e-5)
    sink = {}
    for layer in range(2):
        harness.score_layer(forced.queries[layer][0], memory.k[layer, 0], memory.v[layer, 0], [8], [8, 16, 40],
                            sink, ("random", layer))
    records = {(r["method"], r["budget"]): r for r in harness.summarise(sink)}
    # every method of the registry's scores + the oracle + UNIQUE with fp8 and with int8 means, plain and
    # re-ranked (refine), at 3 budgets ... and UNIQUE / Quest with the first and last page forced
    assert len(records) == 3 * (len(harness.METHODS) + 5 + len(harness.KEEP_METHODS))
    assert all(r["n"] == 7 * 2 * 2 for r in records.values())
    for fmt in ("unique_fp8", "unique_int8", "unique_fp8r", "unique_int8r"):
        assert all(0 <= records[(fmt, T)]["agreement_with_unique_mean"] <= 1 for T in (8, 16, 40))
        assert records[(fmt, 40)]["agreement_with_unique_mean"] == 1
    for (method, T), r in records.items():
        assert r["captured_mean"] <= records[("oracle", T)]["captured_mean"] + 1e-6
        if T == 40:  # every page selected: dense
            assert r["recall_mean"] == 1 and r["captured_mean"] == pytest.approx(1) and r["rel_error_p90"] < 1e-5
            assert r["rel_error_estimate_p90"] < 1e-5  # nothing left out: the estimate is a no-op
    assert records[("oracle", 8)]["recall_mean"] == 1
