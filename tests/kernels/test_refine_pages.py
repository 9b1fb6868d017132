"""Re-ranking a selection from coded means by the KV-dtype means (SparsityConfig.refine): the Triton kernel
(interpreter on CPU) vs its PyTorch twin, the twin against the plain selection, the cache's rmean statistic,
the decode-attention path, and bad arguments."""

from __future__ import annotations

import dataclasses
from functools import partial

import pytest
import torch
from unique_asr.kernels.page_stats.naive import quantise_mean
from unique_asr.kernels.select_pages import (
    REFINABLE,
    refine_pages,
    refine_pages_naive,
    select_pages_naive,
)

from offline_build import run_build
from test_select_pages import make_inputs
from unique_asr.attention import paged_decode_attention
from unique_asr.cache import PagedKVCache
from unique_asr.config import SparsityConfig

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
S = 4
LENGTHS = [37, 64, 5, 100, 1]  # partial last pages, a sequence below the budget, one token


def _inputs(G=3, D=24, Hkv=2):
    q, table, lengths, st = make_inputs(LENGTHS, Hkv=Hkv, G=G, D=D, S=S)
    return q, table, lengths, st


def _flags(mode, st, keep):
    return dict(page_size=S, mode=mode, keep_first=keep, keep_last=keep,
                sigma=st["sigma"] if mode == "perdim" else None)


@pytest.mark.parametrize("impl", [refine_pages_naive, refine_pages], ids=["naive", "triton"])
@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.parametrize("mode", REFINABLE)
def test_candidates_holding_every_page_give_the_plain_selection(mode, keep, impl):
    """Candidates = every held page: the re-ranked k are exactly select_pages_naive's k (GQA groups of 3,
    partial pages, forced sink / last page, a sequence holding fewer than k pages)."""
    q, table, lengths, st = _inputs()
    flags = _flags(mode, st, keep)
    every = select_pages_naive(q, table, lengths, st["mean"], st["std"], k=table.shape[1], **flags)
    for k in (1, 6):
        want = select_pages_naive(q, table, lengths, st["mean"], st["std"], k=k, **flags)
        got = impl(q, every, table, lengths, st["mean"], st["std"], k=k, **flags)
        assert torch.equal(got, want), (mode, keep, k)


@pytest.mark.parametrize("method", ["drop", "kth"])
@pytest.mark.parametrize("code", ["int8", "fp8"])
@pytest.mark.parametrize("mode", REFINABLE)
def test_triton_matches_twin_on_candidates_from_codes(mode, code, method):
    """The real use: codes select k + 4, the pool means keep k (by dropping the 4 lowest, or by the k-th-key
    bisection). Triton = twin; the result lies in the candidates, and equals the pool-dtype selection for
    every (sequence, head) whose pool top-k the candidates hold."""
    q, table, lengths, st = _inputs(G=4, D=32)
    flags = _flags(mode, st, True)
    codes, scale = quantise_mean(st["mean"].float(), code)
    k = 5
    cand = select_pages_naive(q, table, lengths, codes, st["std"], k=k + 4, scale=scale, **flags)
    got = refine_pages(q, cand, table, lengths, st["mean"], st["std"], k=k, method=method, **flags)
    assert torch.equal(got, refine_pages_naive(q, cand, table, lengths, st["mean"], st["std"], k=k, **flags))
    want = select_pages_naive(q, table, lengths, st["mean"], st["std"], k=k, **flags)
    for b in range(len(LENGTHS)):
        for h in range(cand.shape[1]):
            chosen, pool_top = set(got[b, h].tolist()) - {-1}, set(want[b, h].tolist()) - {-1}
            assert chosen <= set(cand[b, h].tolist())
            if pool_top <= set(cand[b, h].tolist()):
                assert torch.equal(got[b, h], want[b, h])


def test_padded_candidates_and_budget_above_held_pages():
    """-1 padded candidates (a sequence holding fewer pages than k + refine) stay out; where fewer than k
    remain, all of them are kept in order and the rest is -1 (the dense case)."""
    q, table, lengths, st = _inputs()
    flags = _flags("unique", st, False)
    cand = select_pages_naive(q, table, lengths, st["mean"], st["std"], k=40, **flags)   # past every row's pages
    for impl in (refine_pages_naive, partial(refine_pages, method="drop"), partial(refine_pages, method="kth")):
        got = impl(q, cand, table, lengths, st["mean"], st["std"], k=30, **flags)
        n_pages = [-(-n // S) for n in LENGTHS]
        for b, n in enumerate(n_pages):
            if n <= 30:
                assert got[b, :, :n].tolist() == [table[b, :n].tolist()] * got.shape[1]
                assert (got[b, :, n:] == -1).all()


@pytest.mark.parametrize("impl", [refine_pages_naive, refine_pages], ids=["naive", "triton"])
def test_bad_arguments_are_clear_errors(impl):
    q, table, lengths, st = _inputs()
    cand = select_pages_naive(q, table, lengths, st["mean"], st["std"], k=6, page_size=S)
    call = dict(k=4, page_size=S)
    with pytest.raises(ValueError, match="at least k = 8"):
        impl(q, cand, table, lengths, st["mean"], st["std"], k=8, page_size=S)
    with pytest.raises(ValueError, match="not codes"):
        impl(q, cand, table, lengths, quantise_mean(st["mean"], "int8")[0], st["std"], **call)
    with pytest.raises(ValueError, match="not 'quest'"):
        impl(q, cand, table, lengths, st["mean"], st["std"], mode="quest", **call)
    with pytest.raises(ValueError, match="candidates must have dtype"):
        impl(q, cand.long(), table, lengths, st["mean"], st["std"], **call)
    with pytest.raises(ValueError, match="candidates must have shape"):
        impl(q, cand[:2], table, lengths, st["mean"], st["std"], **call)
    with pytest.raises(ValueError, match="needs sigma"):
        impl(q, cand, table, lengths, st["mean"], st["std"], mode="perdim", **call)


def test_bad_method_is_a_clear_error():
    q, table, lengths, st = _inputs()
    cand = select_pages_naive(q, table, lengths, st["mean"], st["std"], k=24, page_size=S)
    with pytest.raises(ValueError, match="method must be"):
        refine_pages(q, cand, table, lengths, st["mean"], st["std"], k=4, page_size=S, method="sort")
    with pytest.raises(ValueError, match="at most 16 candidates, got C - k = 20"):
        refine_pages(q, cand, table, lengths, st["mean"], st["std"], k=4, page_size=S, method="drop")


def test_config_and_cache_refuse_refine_without_codes():
    with pytest.raises(ValueError, match="stats_dtype to fp8 or int8"):
        SparsityConfig(mode="unique", refine=4)
    with pytest.raises(ValueError, match="not mode 'quest'"):
        SparsityConfig(mode="quest", stats_dtype="int8", refine=4)
    with pytest.raises(ValueError, match="refine must be"):
        SparsityConfig(mode="unique", stats_dtype="int8", refine=-1)
    assert SparsityConfig(mode="dense", refine=4).extra_statistics == ()   # dense: nothing to re-rank
    assert SparsityConfig(mode="unique", stats_dtype="int8", refine=4).extra_statistics == ("rmean",)
    with pytest.raises(ValueError, match="only beside coded means"):
        PagedKVCache(num_layers=1, num_pages=4, page_size=S, num_kv_heads=1, head_dim=8, max_batch=1,
                     extra_statistics=("rmean",))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_cache_keeps_pool_dtype_means_beside_the_codes(backend):
    """rmean = the page's key mean in the pool dtype (the pool-dtype cache's mean), next to int8 codes."""
    gen = torch.Generator().manual_seed(0)
    kw = dict(num_layers=2, num_pages=30, page_size=S, num_kv_heads=2, head_dim=16, max_batch=3,
              dtype=torch.bfloat16, device=DEVICE, backend=backend)
    coded = PagedKVCache(stats_dtype="int8", extra_statistics=("rmean",), **kw)
    plain = PagedKVCache(**kw)
    assert coded.mean.dtype == torch.int8 and coded.rmean.dtype == torch.bfloat16 and plain.rmean is None
    for counts in ([7, 0, 3], [1, 1, 1], [0, 5, 1], [9, 1, 4]):
        plans = [c.reserve(counts) for c in (coded, plain)]
        for layer in range(2):
            k = torch.randn(sum(counts), 2, 16, generator=gen).to(DEVICE, torch.bfloat16)
            for c, p in zip((coded, plain), plans):
                c.append(layer, p, k, k)
    torch.testing.assert_close(coded.rmean.float(), plain.mean.float(), atol=1e-2, rtol=1e-2)
    assert coded.layer(1).stats.rmean.data_ptr() == coded.rmean[1].data_ptr()


@pytest.mark.parametrize("unselected", ["drop", "estimate"])
@pytest.mark.parametrize("backend", ["sparse-torch", "sparse-triton"])
def test_decode_attention_with_refine_covering_every_page_equals_pool_means(backend, unselected):
    """paged_decode_attention with int8 means and refine past every held page selects what the pool-dtype
    means select, so its output equals the pool-dtype cache's, even with the codes wiped (the re-ranking
    alone decides; with unselected="estimate" the unselected pages' terms read rmean too); a cache built without
    rmean is refused."""
    gen = torch.Generator().manual_seed(1)
    dtype = torch.float32 if backend == "sparse-torch" else torch.bfloat16
    kw = dict(num_layers=1, num_pages=64, page_size=S, num_kv_heads=2, head_dim=16, max_batch=3, dtype=dtype,
              device=DEVICE, backend="torch")
    base = SparsityConfig(mode="unique", page_size=S, budget=5 * S, backend=backend, keep_first=True,
                          unselected=unselected)
    refined = dataclasses.replace(base, stats_dtype="int8", refine=64)
    caches = [PagedKVCache(stats_dtype=c.stats_dtype, extra_statistics=c.extra_statistics, **kw)
              for c in (base, refined)]
    lengths = [45, 13, 70]
    k = torch.randn(sum(lengths), 2, 16, generator=gen).to(DEVICE, dtype)
    v = torch.randn(sum(lengths), 2, 16, generator=gen).to(DEVICE, dtype)
    for c in caches:
        c.append(0, c.reserve(lengths), k, v)
    caches[1].mean.zero_()  # codes of 0: the codes' own ranking is by the spread alone
    q = torch.randn(3, 6, 16, generator=gen).to(DEVICE, dtype)
    if backend == "sparse-triton" and DEVICE == "cpu":
        pytest.importorskip("triton")
    outs = [paged_decode_attention(q, c.layer(0), c.page_table, c.lengths, s) for c, s in zip(caches, (base, refined))]
    torch.testing.assert_close(outs[1], outs[0])
    bare = PagedKVCache(stats_dtype="int8", **kw)
    bare.append(0, bare.reserve(lengths), k, v)
    with pytest.raises(ValueError, match="extra_statistics"):
        paged_decode_attention(q, bare.layer(0), bare.page_table, bare.lengths, refined)


BUILD_SCRIPT = r'''
import torch
from unique_asr.kernels.select_pages import refine as rf
from unique_asr.kernels.select_pages.registry import SCORES
from unique_asr.kernels.select_pages.triton import SelectConfig, _launch_meta

TYPES = {"q_ptr": "*bf16", "cand_ptr": "*i32", "table_ptr": "*i32", "lengths_ptr": "*i32", "mean_ptr": "*bf16",
         "std_ptr": "*fp32", "sigma_ptr": "*bf16", "kmin_ptr": "*bf16", "kmax_ptr": "*bf16", "scale_ptr": "*fp32",
         "scores_ptr": "*fp32", "out_ptr": "*i32", "lam": "fp32"}
for k, refine, mode in ((64, 4, "unique"), (64, 4, "perdim"), (512, 16, "unique")):
    c = k + refine
    # the launch refine_pages makes on a GPU (meta tensors: the cuda form of the TC scoring)
    q = torch.empty(1, 32, 128, dtype=torch.bfloat16, device="meta")
    mean = torch.empty(1, 8, 128, dtype=torch.bfloat16, device="meta")
    std = torch.empty(1, 8, dtype=torch.float32, device="meta")
    cfg = SelectConfig()
    block_p = cfg.block_p // max(1, SCORES[mode].wide_stats)
    _, meta, launch = _launch_meta(q, mean, std, mean if mode == "perdim" else None, None, None, None, mode, 8,
                                   block_p, cfg)
    block_c = max(16, triton.next_power_of_2(c))
    for drop in ((refine, 0) if block_c <= rf.DROP_BLOCK else (0,)):  # as launched, and the k-th bisection
        consts = dict(meta, BLOCK_C=block_c, KEEP_FIRST=True, KEEP_LAST=True, DROP=drop)
        print(k, refine, mode, drop, resources(rf._refine_kernel, TYPES, consts, launch["num_warps"]))
'''


def test_refine_kernel_builds_for_sm90_without_spills():
    """Offline sm_90 build (Triton's bundled ptxas + cuobjdump, no GPU) of the re-ranking kernel as launched for
    k 64 + 4 (UNIQUE and perdim, the published budget) and k 512 + 16, dropping the lowest and by the k-th
    bisection: no stack, i.e. no spills."""
    lines = run_build(BUILD_SCRIPT)
    assert len(lines) == 5 and all("STACK:0 " in line for line in lines), lines
