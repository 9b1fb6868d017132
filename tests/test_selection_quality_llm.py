"""scripts/selection_quality_llm.py on a tiny random decoder (the SmolLM2 GGUF is not a test dependency):
the decode-order re-run of the last positions equals the dense pass when every page is selected, page
statistics cover exactly each row's held keys, the window keeps the first and the newest pages, and the
GGUF q/k un-permutation inverts llama.cpp's permutation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from script_loader import load_script

from unique_asr.models.llm import LLM, LLMConfig

TINY = LLMConfig(vocab_size=61, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4, num_kv_heads=2,
                 head_dim=8, rope_theta=1000.0, tie_word_embeddings=True)


@pytest.fixture(scope="module")
def sq():
    return load_script("selection_quality_llm")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    llm = LLM(TINY).eval()
    ids = torch.randint(0, TINY.vocab_size, (45,))
    return llm, ids


@pytest.mark.parametrize("method,budget,unselected", [("dense", 8, "drop"), ("unique", 64, "drop"),
                                                     ("quest", 64, "drop"), ("unique_fp8", 64, "drop"),
                                                     ("unique_int8", 64, "drop"), ("unique_int8r", 64, "drop"),
                                                     ("unique", 64, "estimate"), ("window", 64, "estimate")])
def test_tail_rerun_equals_dense_when_every_page_is_selected(sq, tiny, method, budget, unselected):
    llm, ids = tiny
    kv, logits = sq.dense_pass(llm, ids)
    E = 9
    r = sq.sparse_tail(llm, ids, kv, E, method, 4, budget, unselected)
    want = F.cross_entropy(logits[-E:-1], ids[-E + 1:], reduction="none")
    torch.testing.assert_close(r["nll"], want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(r["captured"], torch.ones_like(r["captured"]))


def test_small_budget_loses_mass_and_window_keeps_first_and_newest(sq, tiny):
    llm, ids = tiny
    kv, _ = sq.dense_pass(llm, ids)
    r = sq.sparse_tail(llm, ids, kv, 6, "unique", 4, 8)
    assert (r["captured"] < 1).any() and (r["captured"] > 0).all()
    est = sq.sparse_tail(llm, ids, kv, 6, "unique", 4, 8, "estimate")  # same pages, a different softmax
    assert torch.equal(est["captured"][0], r["captured"][0]) and not torch.allclose(est["nll"], r["nll"])
    keys, values = kv[0]
    k_pool, v_pool, stats, table, lengths = sq.row_layout(keys, values, 6, 4)
    q = torch.randn(6, 4, 8)
    ids_sel = sq.select("window", q, k_pool, stats, table, lengths, 4, 3)
    for b in range(6):
        n = -(-int(lengths[b]) // 4)
        want = [0, n - 2, n - 1]
        assert ids_sel[b, 0].tolist() == [int(table[b, i]) for i in want]


@pytest.fixture
def layer0(sq, tiny):
    """Layer 0 of the tiny model laid out as 6 decode rows over pages of 4 tokens, and random queries:
    (k_pool, stats, table, lengths, q)."""
    llm, ids = tiny
    kv, _ = sq.dense_pass(llm, ids)
    keys, values = kv[0]
    k_pool, _, stats, table, lengths = sq.row_layout(keys, values, 6, 4)
    return k_pool, stats, table, lengths, torch.randn(6, 4, 8) * 3


def test_keep_forces_sink_and_current_page_and_agreement_counts_the_reference(sq, tiny, layer0):
    llm, ids = tiny
    kv, _ = sq.dense_pass(llm, ids)
    k_pool, stats, table, lengths, q = layer0
    for method in ("unique", "quest", "unique_fp8", "unique_int8", "unique_int8r"):
        kept = sq.select(method, q, k_pool, stats, table, lengths, 4, 3, keep=True)
        free = sq.select(method, q, k_pool, stats, table, lengths, 4, 3)
        for b in range(6):
            n = -(-int(lengths[b]) // 4)
            for h in range(2):
                assert {int(table[b, 0]), int(table[b, n - 1])} <= set(kept[b, h].tolist())
        exact = sq.select(method, q, k_pool, stats, table, lengths, 4, 3, exact=True)
        assert torch.equal(sq.agreement(exact, exact), torch.ones(6, 2))
        # agreement is the share of the reference's pages chosen: one page swapped of three is 2/3
        swapped = free.clone()
        swapped[0, 0, 0] = -7
        assert sq.agreement(swapped, free)[0, 0].item() == pytest.approx(2 / 3)
    r = sq.sparse_tail(llm, ids, kv, 6, "unique_fp8", 4, 8, keep=True)
    assert r["exact"].shape == r["agreement"].shape == (TINY.num_layers, 6, TINY.num_kv_heads)
    assert ((r["exact"] > 0) & (r["exact"] <= 1)).all()


def test_row_pages_hold_exactly_their_keys(sq):
    keys = torch.randn(23, 2, 8)
    k_pool, _, stats, table, lengths = sq.row_layout(keys, keys, 5, 4)
    for b in range(5):
        L = int(lengths[b])
        for lp in range(-(-L // 4)):
            page = int(table[b, lp])
            held = keys[lp * 4:min(L, lp * 4 + 4)]
            torch.testing.assert_close(stats["mean"][page], held.mean(0))
            torch.testing.assert_close(stats["kmax"][page], held.amax(0))


def test_unpermute_inverts_llama_cpp_permutation(sq):
    heads, D, d = 3, 8, 5
    w = torch.randn(heads * D, d)
    # llama.cpp convert_hf_to_gguf: reshape(n_head, 2, D // 2, d).swapaxes(1, 2)
    permuted = w.reshape(heads, 2, D // 2, d).transpose(1, 2).reshape(heads * D, d)
    torch.testing.assert_close(sq.unpermute(permuted, heads), w)


def test_report_pools_documents_per_cell(sq):
    recs = [{"model": "x"},
            {"context": 64, "document": 0, "method": "dense", "page_size": 8, "budget": 16, "nll": [1.0, 1.0]},
            {"context": 64, "document": 0, "method": "unique", "page_size": 8, "budget": 16, "nll": [2.0, 2.0],
             "captured_mean": 0.5, "agreement_with_fp32": 0.97},
            {"context": 64, "document": 0, "method": "unique", "page_size": 8, "budget": 16, "nll": [1.0, 1.0],
             "captured_mean": 0.75, "keep": True},
            {"context": 64, "document": 0, "method": "unique_fp8", "page_size": 8, "budget": 16, "nll": [2.0, 2.0],
             "captured_mean": 0.5, "agreement_with_bf16_unique": 0.9, "agreement_with_fp32": 0.95}]
    header, _, line = sq.report(recs).splitlines()
    assert header.startswith("| context | S | T | dense ppl | unique | unique+keep | unique_fp8 | unique_int8 | "
                             "unique_fp8r | unique_int8r | mean |")
    assert header.endswith("| bf16 = fp32 pages (unique) | fp8 = bf16 pages |")   # coded arms run: fp8 only
    assert line.startswith("| 64 | 8 | 16 | 2.72 | 7.39 / 0.500 | 2.72 / 0.750 | 7.39 / 0.500 | - | - | - | - |")
    assert line.endswith("| 97.0% | 90.0% |")


def test_unique_spread_weight_is_an_arm(sq, layer0):
    k_pool, stats, table, lengths, q = layer0
    # lam 0 is mean-only; the default is the published 0.5
    assert torch.equal(sq.select("unique", q, k_pool, stats, table, lengths, 4, 3, lam=0.0),
                       sq.select("mean", q, k_pool, stats, table, lengths, 4, 3))
    assert torch.equal(sq.select("unique", q, k_pool, stats, table, lengths, 4, 3, lam=0.5),
                       sq.select("unique", q, k_pool, stats, table, lengths, 4, 3))
    assert sq.label("unique", "drop", True, 2.0) == "unique@2+keep" and sq.label("unique", "drop", False, 0.5) == "unique"
    recs = [{"context": 64, "document": 0, "method": "dense", "page_size": 8, "budget": 16, "nll": [1.0],
             "keep": True},  # a run with --keep on only: dense stays the reference
            {"context": 64, "document": 0, "method": "unique", "page_size": 8, "budget": 16, "nll": [1.0],
             "captured_mean": 0.5, "lam": 0.5},
            {"context": 64, "document": 0, "method": "unique", "page_size": 8, "budget": 16, "nll": [2.0],
             "captured_mean": 0.25, "lam": 2.0}]
    header, _, line = sq.report(recs).splitlines()
    assert "| unique | unique@2 | unique_fp8 |" in header and "| 2.72 / 0.500 | 7.39 / 0.250 | - |" in line


def test_refined_codes_select_the_bf16_pages_when_the_candidates_hold_them(sq, layer0):
    """unique_int8r (SparsityConfig.refine 4): where k + 4 candidates cover every held page the bf16 means
    alone decide, so it selects exactly bf16 UNIQUE's pages; with fewer candidates its pages are among the
    int8 selection's k + 4."""
    k_pool, stats, table, lengths, q = layer0
    n_max = -(-int(lengths.max()) // 4)
    for keep in (False, True):
        want = sq.select("unique", q, k_pool, stats, table, lengths, 4, n_max - 4, keep=keep)
        got = sq.select("unique_int8r", q, k_pool, stats, table, lengths, 4, n_max - 4, keep=keep)
        assert torch.equal(got, want)
        few = sq.select("unique_int8r", q, k_pool, stats, table, lengths, 4, 2, keep=keep)
        wide = sq.select("unique_int8", q, k_pool, stats, table, lengths, 4, 6, keep=keep)
        assert all(set(few[b, h].tolist()) <= set(wide[b, h].tolist()) for b in range(6) for h in range(2))
