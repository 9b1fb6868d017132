"""Page scoring + top-k selection: Triton (interpreter on CPU) vs the PyTorch twin; oracle vs softmax."""

from __future__ import annotations

import pytest
import torch
from offline_build import run_build
from unique_asr.kernels.select_pages import (
    SelectConfig,
    oracle_scores_naive,
    page_scores_naive,
    score_pages,
    select_pages,
    select_pages_naive,
)
from unique_asr.kernels.select_pages.registry import scores_for

SELECT_MODES = scores_for("select")  # every score the decode kernel runs (the registry)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def make_inputs(lengths, Hkv=2, G=4, D=32, S=4, dtype=torch.float32, spare=5, gen=None):
    """Random stats for pages scattered over a pool; returns (q, page_table, lengths, stats dict)."""
    gen = gen or torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    held = [-(-n // S) for n in lengths]
    M, P = max(held) + 2, sum(held) + spare
    perm = torch.randperm(P, generator=gen)
    table = torch.full((len(lengths), M), -1, dtype=torch.int32)
    start = 0
    for b, h in enumerate(held):
        table[b, :h] = perm[start:start + h].int()
        start += h
    lo = torch.randn(P, Hkv, D, generator=gen)
    stats = dict(mean=torch.randn(P, Hkv, D, generator=gen).to(dtype),
                 std=torch.rand(P, Hkv, generator=gen) * 3,
                 sigma=torch.rand(P, Hkv, D, generator=gen).to(dtype), kmin=lo.to(dtype),
                 kmax=(lo + torch.rand(P, Hkv, D, generator=gen)).to(dtype))
    stats = {k: v.to(DEVICE) for k, v in stats.items()}
    q = torch.randn(len(lengths), Hkv * G, D, generator=gen).to(DEVICE, dtype)
    return q, table.to(DEVICE), torch.tensor(lengths, dtype=torch.int32, device=DEVICE), stats


def assert_valid_topk(out, scores, table, lengths, k, S, tol, forced=()):
    """out int32 [B, Hkv, k]: exactly min(k, held) distinct held pages in ascending logical order, -1 after,
    forced logical pages included, and every chosen page scoring >= every other held page - tol."""
    B, Hkv, _ = out.shape
    for b in range(B):
        n_pages = -(-int(lengths[b]) // S)
        logical_of = {int(p): i for i, p in enumerate(table[b, :n_pages].tolist())}
        for h in range(Hkv):
            row = out[b, h].tolist()
            n_sel = min(k, n_pages)
            assert all(p == -1 for p in row[n_sel:]), row
            chosen = [logical_of[p] for p in row[:n_sel]]
            assert chosen == sorted(set(chosen)), row
            others = sorted(set(range(n_pages)) - set(chosen))
            for f in forced:
                assert (f if f >= 0 else n_pages + f) in chosen
            free = [i for i in chosen if i not in {f if f >= 0 else n_pages + f for f in forced}]
            if free and others:
                assert scores[b, h, free].min() >= scores[b, h, others].max() - tol


@pytest.mark.parametrize("G", [1, 4, 8])
@pytest.mark.parametrize("mode", SELECT_MODES)
@pytest.mark.parametrize("splits", [1, 3])
def test_triton_matches_naive_fp32(G, mode, splits):
    lengths = [150, 9, 77, 4]  # long, fits the budget, ragged, single partial page
    q, table, lens, st = make_inputs(lengths, G=G)
    args = dict(k=5, page_size=4, mode=mode, **{n: st[n] for n in ("sigma", "kmin", "kmax")})
    got = select_pages(q, table, lens, st["mean"], st["std"], splits=splits, **args)
    want = select_pages_naive(q, table, lens, st["mean"], st["std"], **args)
    assert torch.equal(got, want)


RADIX = SelectConfig(single_read_max=0)  # the multi-pass radix select, for rows the single read cannot hold


@pytest.mark.parametrize("splits", [1, 4])
@pytest.mark.parametrize("config", [SelectConfig(prefetch=False, block_p=32), RADIX,
                                    SelectConfig(single_read_max=0, block_r=4096)])
def test_rows_longer_than_one_radix_block(splits, config):
    """A 2.1K-page row by the single read (4096-wide register row) and by the radix passes over several
    steps (block_r 1024) or one (4096); ties spanning steps go to the lower pages; prefetch on and off."""
    lengths = [4 * 2100 + 3, 4 * 1030]
    q, table, lens, st = make_inputs(lengths, Hkv=1, G=2, D=16)
    kw = dict(k=40, page_size=4, splits=splits, config=config)
    got = select_pages(q, table, lens, st["mean"], st["std"], **kw)
    assert torch.equal(got, select_pages_naive(q, table, lens, st["mean"], st["std"], k=40, page_size=4))
    flat = torch.zeros_like(st["mean"])
    ties = select_pages(q, table, lens, flat, torch.zeros_like(st["std"]), keep_last=True, **kw)
    n_pages = [-(-n // 4) for n in lengths]
    for b in range(2):
        assert ties[b, 0].tolist() == table[b, :39].tolist() + [table[b, n_pages[b] - 1].item()]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mode", [m for m in SELECT_MODES if m != "mean"])
def test_half_precision_selects_a_valid_topk(dtype, mode):
    lengths = [200, 33, 64]
    q, table, lens, st = make_inputs(lengths, Hkv=2, G=4, D=64, S=8, dtype=dtype)
    extra = {n: st[n] for n in ("sigma", "kmin", "kmax")}
    got = select_pages(q, table, lens, st["mean"], st["std"], k=6, page_size=8, mode=mode, **extra)
    scores = page_scores_naive(q, table, lens, st["mean"], st["std"], page_size=8, mode=mode, **extra)
    assert_valid_topk(got.cpu(), scores.cpu(), table.cpu(), lens.cpu(), 6, 8, tol=0.1)


@pytest.mark.parametrize("keep", [(True, False), (False, True), (True, True)])
@pytest.mark.parametrize("splits", [1, 2])
@pytest.mark.parametrize("config", [None, RADIX])
def test_forced_pages_count_within_k(keep, splits, config):
    lengths = [90, 61, 12]
    q, table, lens, st = make_inputs(lengths, G=2)
    kw = dict(k=4, page_size=4, keep_first=keep[0], keep_last=keep[1])
    got = select_pages(q, table, lens, st["mean"], st["std"], splits=splits, config=config, **kw)
    assert torch.equal(got, select_pages_naive(q, table, lens, st["mean"], st["std"], **kw))
    scores = page_scores_naive(q, table, lens, st["mean"], st["std"], page_size=4)
    forced = [0] * keep[0] + [-1] * keep[1]
    assert_valid_topk(got.cpu(), scores.cpu(), table.cpu(), lens.cpu(), 4, 4, tol=1e-4, forced=forced)


@pytest.mark.parametrize("k", [1, 7, 64])
def test_k_edges_and_budget_covering_everything(k):
    """k = 1 picks the argmax; k >= all held pages selects every page (dense), -1 padded."""
    lengths = [28, 5, 1]
    q, table, lens, st = make_inputs(lengths, G=8, D=16)
    got = select_pages(q, table, lens, st["mean"], st["std"], k=k, page_size=4)
    assert torch.equal(got, select_pages_naive(q, table, lens, st["mean"], st["std"], k=k, page_size=4))
    if k >= 7:
        for b, n in enumerate(lengths):
            want = table[b, : -(-n // 4)].tolist()
            assert got[b, 0].tolist() == want + [-1] * (k - len(want))
    if k == 1:
        scores = page_scores_naive(q, table, lens, st["mean"], st["std"], page_size=4)
        assert got[0, :, 0].tolist() == table[0, scores[0].argmax(-1)].tolist()


@pytest.mark.parametrize("config", [None, RADIX])
def test_ties_go_to_the_lower_logical_page(config):
    """All-zero scores (-0.0 means on some pages, q > 0): one tie, lowest pages first, nothing written past
    the rows of `out`."""
    q, table, lens, st = make_inputs([64, 40], G=1)
    zeros = torch.zeros_like(st["mean"])
    zeros[1::2] = -0.0
    q = q.abs() + 0.1
    guard = torch.full((2 * 2 * 3 + 64,), 7, dtype=torch.int32, device=DEVICE)  # nothing written past out
    got = select_pages(q, table, lens, zeros, torch.zeros_like(st["std"]), k=3, page_size=4, config=config,
                       out=guard[:12].view(2, 2, 3))
    assert guard[12:].eq(7).all()
    assert got[:, 0].tolist() == table[:, :3].tolist() and got[:, 1].tolist() == table[:, :3].tolist()
    want = select_pages_naive(q, table, lens, zeros, torch.zeros_like(st["std"]), k=3, page_size=4)
    assert torch.equal(got, want)


@pytest.mark.parametrize("splits", [1, 4])
def test_single_read_at_its_longest_row(splits):
    """16384 table columns (the single read's limit: 128K tokens at S = 8), one row full to the last
    column, one ragged; k = 64 with the last page forced; negative and positive scores."""
    q, table, lens, st = make_inputs([4 * 16384, 4 * 9000 + 1], Hkv=1, G=1, D=16, spare=0)
    table = table[:, :16384].contiguous()
    kw = dict(k=64, page_size=4, keep_last=True)
    got = select_pages(q, table, lens, st["mean"], st["std"], splits=splits, **kw)
    assert torch.equal(got, select_pages_naive(q, table, lens, st["mean"], st["std"], **kw))
    with pytest.raises(ValueError, match="single_read_max"):
        SelectConfig(single_read_max=16385)
    with pytest.raises(ValueError, match="block_r"):
        SelectConfig(block_r=3000)


@pytest.mark.parametrize("config", [SelectConfig(), SelectConfig(kth_bits=1), SelectConfig(kth_bits=8),
                                    SelectConfig(prefilter=False), SelectConfig(prefilter=False, kth_bits=1)])
def test_prefilter_and_kth_steps_select_like_the_twin(config):
    """The whole-row top-k by the prefilter (group maxima bound, candidates) and by the single read, with
    1- and 2-bit k-th steps and 8-bit radix passes (k = 5: 8 groups, 128 candidates): a 300-page row, a row with fewer pages than
    groups (every page a candidate), one that fits k, a partial page; then all-equal scores (all 300 pages
    survive the bound, more than the candidate buffer holds: the radix passes run; ties go low)."""
    lengths = [4 * 300 - 1, 4 * 6 + 2, 12, 4 * 41]
    q, table, lens, st = make_inputs(lengths, Hkv=2, G=2, D=16)
    kw = dict(k=5, page_size=4, splits=1, config=config)
    got = select_pages(q, table, lens, st["mean"], st["std"], keep_first=True, **kw)
    want = select_pages_naive(q, table, lens, st["mean"], st["std"], k=5, page_size=4, keep_first=True)
    assert torch.equal(got, want)
    flat = torch.zeros_like(st["mean"])
    ties = select_pages(q, table, lens, flat, torch.zeros_like(st["std"]), keep_last=True, **kw)
    assert torch.equal(ties, select_pages_naive(q, table, lens, flat, torch.zeros_like(st["std"]), k=5,
                                                page_size=4, keep_last=True))
    with pytest.raises(ValueError, match="kth_bits"):
        SelectConfig(kth_bits=3)


def test_lengths_past_the_table_are_clamped_like_the_twin():
    q, table, lens, st = make_inputs([60, 60], G=2)
    full = table[:, :15].contiguous()  # every entry a held page; lengths claim more than the row holds
    long = torch.full_like(lens, 4 * 15 + 50)
    got = select_pages(q, full, long, st["mean"], st["std"], k=4, page_size=4)
    assert torch.equal(got, select_pages_naive(q, full, long, st["mean"], st["std"], k=4, page_size=4))


def test_empty_sequence_selects_nothing():
    q, table, lens, st = make_inputs([0, 30], G=1)
    got = select_pages(q, table, lens, st["mean"], st["std"], k=2, page_size=4)
    assert got[0].eq(-1).all() and got[1].ge(0).all()


def test_oracle_is_the_dense_softmax_mass():
    S, D = 4, 16
    lengths = [23, 9]
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    q, table, lens, _ = make_inputs(lengths, Hkv=1, G=1, D=D, S=S, gen=gen)
    k_pool = torch.randn(int(table.max()) + 1, S, 1, D, generator=gen).to(DEVICE)
    mass = oracle_scores_naive(q, table, lens, k_pool)
    for b, n in enumerate(lengths):
        keys = k_pool[table[b, : -(-n // S)].long()].reshape(-1, D)[:n]
        p = torch.softmax(keys @ q[b, 0] / D ** 0.5, 0)
        pages = torch.nn.functional.pad(p, (0, -n % S)).view(-1, S).sum(1)
        torch.testing.assert_close(mass[b, 0, : pages.numel()], pages)
    P = k_pool.shape[0]
    no_mean, no_std = torch.zeros(P, 1, D, device=DEVICE), torch.zeros(P, 1, device=DEVICE)
    sel = select_pages_naive(q, table, lens, no_mean, no_std, k=2, page_size=S, mode="oracle", k_pool=k_pool)
    best = mass[0, 0].topk(2).indices.sort().values
    assert sel[0, 0].tolist() == table[0, best].tolist()


@pytest.mark.parametrize("bad", ["table_dtype", "heads", "lengths", "no_sigma", "oracle", "k0", "std_dtype",
                                 "splits", "scores_shape", "out_dtype", "sigma_dtype"])
def test_bad_inputs_raise_value_error(bad):
    q, table, lens, st = make_inputs([20, 8], G=2)
    args = dict(q=q, page_table=table, lengths=lens, mean=st["mean"], std=st["std"], k=2, page_size=4)
    if bad == "table_dtype":
        args["page_table"] = table.long()
    elif bad == "heads":
        args["q"] = q[:, :3]
    elif bad == "lengths":
        args["lengths"] = lens[:1]
    elif bad == "no_sigma":
        args["mode"] = "perdim"
    elif bad == "oracle":
        args["mode"] = "oracle"
    elif bad == "k0":
        args["k"] = 0
    elif bad == "std_dtype":
        args["std"] = st["std"].half()
    elif bad == "splits":
        args["splits"] = 0
    elif bad == "scores_shape":
        args["scores"] = torch.zeros(2, 2, 3, device=DEVICE)
    elif bad == "out_dtype":
        args["out"] = torch.zeros(2, 2, 2, dtype=torch.int64, device=DEVICE)
    elif bad == "sigma_dtype":
        args.update(mode="perdim", sigma=st["sigma"].half())
    with pytest.raises(ValueError):
        select_pages(**args)


BUILD_SCRIPT = r'''
import sys
from unique_asr.kernels.select_pages import triton as sp

TYPES = {"q_ptr": "*bf16", "table_ptr": "*i32", "lengths_ptr": "*i32", "mean_ptr": "*bf16",
         "std_ptr": "*fp32", "sigma_ptr": "*bf16", "kmin_ptr": "*bf16", "kmax_ptr": "*bf16",
         "scale_ptr": "*fp32", "scores_ptr": "*fp32", "out_ptr": "*i32", "cand_key_ptr": "*i32",
         "cand_idx_ptr": "*i32", "lam": "fp32"}
import torch

def launches(max_pages):
    """(name, kernel, constexprs, warps) as select_pages launches them for a 640-row batch (whole-row select)
    and, for the split-filter path, one row (fp8 means: HAS_SCALE)."""
    meta = dict(HKV=8, G=4, GP=16, D=128, BLOCK_D=128, S=8, BLOCK_P=64, MODE=0, PREC="tf32", PREFETCH=True,
                FMA=False, TC=0, SCORES_L2=True, KBITS=2)
    for name, cfg in (("select", sp.SelectConfig()), ("select-single", sp.SelectConfig(prefilter=False)),
                      ("select-radix", sp.SelectConfig(kth_bits=8))):
        row, block_r, warps, ng, cap = sp._select_params(640, max_pages, 64, torch.device("cpu"), cfg)
        yield name, sp._select_kernel, dict(meta, KBITS=cfg.kth_bits, BLOCK_R=block_r, FUSED=False, KEEP_FIRST=True,
                                            KEEP_LAST=True, ROW=row, HAS_SCALE=False, NG=ng, CAP=cap), warps
    plain = {k: v for k, v in meta.items() if k != "KBITS"}  # KBITS: the select kernel's alone
    yield "score-tc", sp._score_kernel, dict(plain, TC=1, FILL=False, HAS_SCALE=False), 4
    yield "score-int8-mma", sp._score_kernel, dict(plain, TC=5, FILL=False, HAS_SCALE=True), 4
    split = sp._filter_split(8, max_pages, 64, 64, torch.device("cpu"), sp.SelectConfig(filter_split=256), True)
    if split:
        for scale, fma, tc, radix in ((False, False, 0, False), (True, False, 0, False), (True, True, 0, False),
                                      (False, False, 1, False), (True, False, 1, False), (False, False, 1, True)):
            yield f"filter{'-fp8' if scale else ''}{'-fma' if fma else ''}{'-tc' if tc else ''}{'-radix' if radix else ''}", sp._filter_kernel, dict(
                plain, SPLIT=split, KEEP_FIRST=True, KEEP_LAST=True, HAS_SCALE=scale, FMA=fma, TC=tc, RADIX=radix), 4
        for fma, tc in ((True, 0), (False, 1), (False, 5)):  # int8 means (the same kernels, "*i8" codes; 5: int8_mma)
            yield f"filter-int8{'-fma' if fma else ''}{'-tc' if tc else ''}{'-mma' if tc == 5 else ''}", sp._filter_kernel, dict(
                plain, SPLIT=split, KEEP_FIRST=True, KEEP_LAST=True, HAS_SCALE=True, FMA=fma, TC=tc, RADIX=False), 4
        cand = triton.next_power_of_2(triton.cdiv(max_pages, split) * 64)
        for radix, ng in ((False, 0), (True, 0), (False, 64)):
            yield f"merge{'-radix' if radix else ''}{'-bound' if ng else ''}", sp._merge_kernel, dict(
                HKV=8, S=8, CAND=cand, BLOCK_P=64, RADIX=radix, NG=ng, CAP=1024 if ng else 16), sp._merge_warps(cand, radix)


for max_pages, (name, fn, consts, warps) in ((m, x) for m in map(int, sys.argv[1:]) for x in launches(m)):
    types = dict(TYPES, mean_ptr=("*i8" if "int8" in name else "*fp8e4nv") if consts.get("HAS_SCALE") else "*bf16")
    print(max_pages, name, resources(fn, types, consts, warps))
'''


def test_select_kernel_builds_for_sm90_without_spills():
    """Offline sm_90 build (no GPU: Triton's bundled ptxas + cuobjdump) of the select kernel as launched for
    4K- and 16K-page rows (single read) and longer rows (radix), the TC scoring kernel, and the split-filter
    path's kernels (bf16, fp8 and int8 means, tf32 / FMA / TC scoring, bisection or radix k-th) and merge (also
    with the bound): no stack, i.e. no spills."""
    lines = run_build(BUILD_SCRIPT, "4096", "16384", "20000")
    assert len(lines) == 3 * 5 + 3 * 12 and all("STACK:0 " in line for line in lines), lines


INT8_OPS_SCRIPT = r'''
from unique_asr.kernels.select_pages import triton as sp

types = {"q_ptr": "*bf16", "table_ptr": "*i32", "lengths_ptr": "*i32", "mean_ptr": "*i8", "std_ptr": "*fp32",
         "sigma_ptr": "*bf16", "kmin_ptr": "*bf16", "kmax_ptr": "*bf16", "scale_ptr": "*fp32",
         "scores_ptr": "*fp32", "lam": "fp32"}
meta = dict(HKV=8, G=4, GP=16, D=128, BLOCK_D=128, S=8, BLOCK_P=64, MODE=0, PREC="tf32", PREFETCH=True,
            FMA=False, SCORES_L2=True, FILL=False, HAS_SCALE=True)
for tc in (1, 5):
    ops = opcodes(sp._score_kernel, types, dict(meta, TC=tc), 4)
    print(tc, ops.get("IGMMA", 0), ops.get("HGMMA", 0), ops.get("PRMT", 0))
'''


def test_int8_codes_reach_the_integer_tensor_cores():
    """SelectConfig.int8_mma, offline sm_90 build of the split scoring kernel with int8 codes: the products run
    on the integer tensor cores (IGMMA) and the codes are not widened (no PRMT byte shuffles), where the bf16
    TC path (TC = 1) widens them (PRMT) for HGMMA."""
    rows = {int(line.split()[0]): list(map(int, line.split()[1:])) for line in run_build(INT8_OPS_SCRIPT)}
    igmma, hgmma, prmt = rows[5]
    assert igmma > 0 and hgmma == 0 and prmt == 0, rows
    assert rows[1][1] > 0 and rows[1][2] > 0, rows


FILTER = SelectConfig(filter_split=32, block_p=32)  # the split-filter path, several splits per row (tl.dot tiles >= 16 on GPU)
FILTER_RADIX = SelectConfig(filter_split=32, block_p=32, split_radix=True)  # its k-th by radix passes
FILTER_BOUND = SelectConfig(filter_split=32, block_p=32, merge_bound=True)  # the merge's candidates bounded first


@pytest.mark.parametrize("G", [1, 4])
@pytest.mark.parametrize("mode", SELECT_MODES)
@pytest.mark.parametrize("keep", [(False, False), (True, True)])
def test_split_filter_matches_naive(G, mode, keep):
    """Split-filter path (local top-k per split of 32 pages, then a merge; k-th by bisection and by radix
    passes): exactly the twin's selection, on rows of many splits, partial last pages, rows that fit the
    budget, forced pages, GQA groups."""
    lengths = [150, 9, 77, 4, 301]
    q, table, lens, st = make_inputs(lengths, G=G)
    args = dict(k=5, page_size=4, mode=mode, keep_first=keep[0], keep_last=keep[1],
                **{n: st[n] for n in ("sigma", "kmin", "kmax")})
    want = select_pages_naive(q, table, lens, st["mean"], st["std"], **args)
    # the k-th variants act on the scores only, so one score mode covers them (the interpreter is slow)
    for config in (FILTER, FILTER_RADIX, FILTER_BOUND) if mode == "unique" else (FILTER,):
        assert torch.equal(select_pages(q, table, lens, st["mean"], st["std"], config=config, **args), want)


@pytest.mark.parametrize("k", [1, 16, 40, 200])
def test_split_filter_ties_and_budgets(k):
    """Equal scores spanning splits go to the lower logical pages; k above the split size (every page of a
    split is a candidate), k >= all held pages (dense: every page, -1 padded)."""
    q, table, lens, st = make_inputs([4 * 170 + 2, 4 * 33], Hkv=1, G=2, D=16)
    flat = torch.zeros_like(st["mean"])
    want = select_pages_naive(q, table, lens, flat, torch.zeros_like(st["std"]), k=k, page_size=4)
    want_rand = select_pages_naive(q, table, lens, st["mean"], st["std"], k=k, page_size=4)
    for config in (FILTER, FILTER_RADIX, FILTER_BOUND):
        got = select_pages(q, table, lens, flat, torch.zeros_like(st["std"]), k=k, page_size=4, config=config)
        assert torch.equal(got, want)
        rand = select_pages(q, table, lens, st["mean"], st["std"], k=k, page_size=4, config=config)
        assert torch.equal(rand, want_rand)
    for b, n in enumerate((171, 33)):
        if k >= n:
            assert got[b, 0].tolist() == table[b, :n].tolist() + [-1] * (k - n)


@pytest.mark.parametrize("mode", SELECT_MODES)
@pytest.mark.parametrize("config", [SelectConfig(fma=True), SelectConfig(fma=True, filter_split=32, block_p=32),
                                    SelectConfig(fma=True, single_read_max=0)])
@pytest.mark.parametrize("splits", [None, 1, 3])
def test_fma_scoring_matches_naive(mode, config, splits):
    """Scoring without tl.dot (fp32 multiply-adds per query row): the twin's selection on every path."""
    lengths = [150, 9, 77, 4, 300]
    q, table, lens, st = make_inputs(lengths, G=4)
    args = dict(k=5, page_size=4, mode=mode, keep_first=True, **{n: st[n] for n in ("sigma", "kmin", "kmax")})
    got = select_pages(q, table, lens, st["mean"], st["std"], config=config, splits=splits, **args)
    assert torch.equal(got, select_pages_naive(q, table, lens, st["mean"], st["std"], **args))


def coded_means(mean, code="fp8"):
    """(codes, fp32 scale) of fp32 means [P, Hkv, D], as the cache stores them: e4m3 (code "fp8") or int8."""
    from unique_asr.kernels.page_stats.naive import quantise_mean

    return quantise_mean(mean.float(), code)


@pytest.mark.parametrize("config", [None, FILTER, RADIX, SelectConfig(fma=True), SelectConfig(tc=True),
                                    SelectConfig(int8_mma=True), SelectConfig(int8_mma=True, filter_split=32, block_p=32)])
@pytest.mark.parametrize("mode", ["unique", "mean", "perdim"])
@pytest.mark.parametrize("code", ["fp8", "int8"])
def test_coded_means_select_like_the_twin(config, mode, code):
    """fp8 (e4m3) or int8 means with a per-(page, head) scale: the kernel scores (q·code)·scale in tf32 (TC:
    bf16 codes, exact for both), the twin q·(code·scale) in fp32; both select a valid top-k of the twin's
    scores (to tf32 rounding)."""
    lengths = [200, 33, 64]
    q, table, lens, st = make_inputs(lengths, Hkv=2, G=4, D=32, S=4)
    if config is not None and config.tc:
        q, st["sigma"] = q.bfloat16(), st["sigma"].bfloat16()
    codes, scale = coded_means(st["mean"], code)
    extra = dict(sigma=st["sigma"], scale=scale)
    got = select_pages(q, table, lens, codes, st["std"], k=6, page_size=4, mode=mode, config=config, **extra)
    scores = page_scores_naive(q, table, lens, codes, st["std"], page_size=4, mode=mode, **extra)
    assert_valid_topk(got.cpu(), scores.cpu(), table.cpu(), lens.cpu(), 6, 4, tol=2e-2)
    dequant = codes.float() * scale[..., None]
    torch.testing.assert_close(
        scores, page_scores_naive(q, table, lens, dequant, st["std"], page_size=4, mode=mode, sigma=st["sigma"]))


@pytest.mark.parametrize("code", ["fp8", "int8"])
def test_coded_means_need_their_scale(code):
    q, table, lens, st = make_inputs([20, 8], G=2)
    codes, scale = coded_means(st["mean"], code)
    with pytest.raises(ValueError, match="coded"):
        select_pages(q, table, lens, codes, st["std"], k=2, page_size=4)
    with pytest.raises(ValueError, match="coded"):
        select_pages(q, table, lens, st["mean"], st["std"], k=2, page_size=4, scale=scale)
    with pytest.raises(ValueError, match="scale"):
        select_pages(q, table, lens, codes, st["std"], k=2, page_size=4, scale=scale[:, :1])
    with pytest.raises(ValueError, match="filter_split"):
        SelectConfig(filter_split=48)


TC_CONFIGS = [SelectConfig(tc=True), SelectConfig(tc=True, filter_split=32, block_p=32),
              SelectConfig(tc=True, single_read_max=0, prefetch=False)]


@pytest.mark.parametrize("mode", SELECT_MODES)
@pytest.mark.parametrize("config", TC_CONFIGS)
@pytest.mark.parametrize("splits", [None, 3])
def test_tc_scoring_selects_a_topk_of_the_twin(mode, config, splits):
    """TC scoring (bf16 statistics as the left operand, q as bf16 hi + lo): on every path (whole row, split
    filter, radix; split and fused scoring), rows longer than the budget, fitting it, partial pages, GQA,
    a forced first page: a top-k of the twin's fp32 scores to 1e-3 (the hi + lo split keeps q to 2^-16;
    on CPU the interpreter multiplies the same bf16 operands in fp32, see `_mma`)."""
    lengths = [150, 9, 77, 4, 300]
    q, table, lens, st = make_inputs(lengths, G=4, dtype=torch.bfloat16)
    extra = {n: st[n] for n in ("sigma", "kmin", "kmax")}
    got = select_pages(q, table, lens, st["mean"], st["std"], k=5, page_size=4, mode=mode, keep_first=True,
                       config=config, splits=splits, **extra)
    scores = page_scores_naive(q, table, lens, st["mean"], st["std"], page_size=4, mode=mode, **extra)
    assert_valid_topk(got.cpu(), scores.cpu(), table.cpu(), lens.cpu(), 5, 4, tol=1e-3, forced=[0])


@pytest.mark.parametrize("mode", SELECT_MODES)
@pytest.mark.parametrize("stats", ["fp32", "bf16", "bf16-tc", "fp8", "fp8-tc", "int8", "int8-tc", "int8-mma"])
@pytest.mark.parametrize("G", [1, 4])
def test_score_pages_matches_the_twin(mode, stats, G):
    """`score_pages` (the scoring pass alone) equals `page_scores_naive`: every held page scored, -inf at
    unheld columns (an empty sequence, partial pages), programs of 32 pages (several per row)."""
    if stats.startswith(("fp8", "int8")) and mode == "quest":
        return  # quest reads kmin / kmax, not the means: no coded form
    lengths = [150, 0, 77, 4]
    q, table, lens, st = make_inputs(lengths, G=G, dtype=torch.float32 if stats == "fp32" else torch.bfloat16)
    mean, scale = st["mean"], None
    if stats.startswith(("fp8", "int8")):
        mean, scale = coded_means(mean, stats.split("-")[0])
    extra = dict(scale=scale, **{n: st[n] for n in ("sigma", "kmin", "kmax")})
    cfg = SelectConfig(tc=stats.endswith(("tc", "mma")), int8_mma=stats.endswith("mma"), pages_per_program=32,
                       block_p=16)
    got = score_pages(q, table, lens, mean, st["std"], page_size=4, mode=mode, config=cfg, **extra)
    want = page_scores_naive(q, table, lens, mean, st["std"], page_size=4, mode=mode, **extra)
    assert torch.equal(torch.isinf(got), torch.isinf(want)) and bool((got[torch.isinf(got)] < 0).all())
    torch.testing.assert_close(got[~torch.isinf(want)], want[~torch.isinf(want)], rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="scores"):
        score_pages(q, table, lens, mean, st["std"], page_size=4, mode=mode, scores=got[:, :1], **extra)


@pytest.mark.parametrize("code, mode, D, cfg, want", [
    ("int8", "unique", 32, SelectConfig(), 6), ("int8", "mean", 64, SelectConfig(), 6),
    ("int8", "perdim", 32, SelectConfig(), 2),               # sigma needs the bf16 operands of |q|
    ("int8", "unique", 16, SelectConfig(), 2),               # below one int8 MMA K step
    ("int8", "unique", 32, SelectConfig(int8_mma=False), 2),
    ("int8", "unique", 32, SelectConfig(fp8_f16=True), 4),    # the fp16 products asked for
    ("int8", "unique", 32, SelectConfig(fp8_f16=True, int8_mma=True), 6),
    ("int8", "unique", 32, SelectConfig(tc=False), 0),
    ("fp8", "unique", 32, SelectConfig(), 2), ("fp8", "unique", 32, SelectConfig(fp8_f16=True), 4),
])
def test_scoring_path_per_means_format(code, mode, D, cfg, want):
    """Which TC scoring each means format takes (`_launch_meta`'s TC; +1 = the interpreter's form): int8 codes
    on the integer products by default where eligible, e4m3 codes widened."""
    from unique_asr.kernels.select_pages import triton as sp

    q, table, lens, st = make_inputs([40], D=D)
    codes, scale = coded_means(st["mean"], code)
    sigma = st["sigma"].bfloat16() if mode == "perdim" else None  # TC reads bf16 sigma
    _, meta, launch = sp._launch_meta(q, codes, st["std"], sigma, None, None,
                                      scale, mode, 4, 16, cfg)
    assert meta["TC"] == want
    assert launch.get("num_stages") == (1 if want == 6 else None)


@pytest.mark.parametrize("G, D, q_scale", [(8, 128, 1.0), (1, 64, 1e3), (4, 128, 1e-4), (2, 32, 0.0)])
def test_int8_products_keep_their_precision_across_query_scales(G, D, q_scale):
    """int8 codes on the integer products (the default): q * 2^e in three int8 parts keeps about 20 bits of the
    group's largest element at any query scale (huge, tiny, zero; heads of norms 1e-3 to 10 in one group): the
    scores within 1e-5 of the largest twin score (measured: <= 6e-7)."""
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, 2 * G, D, generator=gen) * q_scale
    q[0, :G] *= torch.tensor([1, 1e-3, 10, 1, 1, 1, 1, 1])[:G, None]
    codes, scale = coded_means(torch.randn(60, 2, D, generator=gen), "int8")
    std = torch.rand(60, 2, generator=gen)
    table = torch.randperm(60, generator=gen).int().view(2, 30)
    lens = torch.tensor([120, 37], dtype=torch.int32)
    got = score_pages(q, table, lens, codes, std, page_size=4, scale=scale,
                      config=SelectConfig(pages_per_program=16, block_p=16))
    want = page_scores_naive(q, table, lens, codes, std, page_size=4, scale=scale)
    held = ~torch.isinf(want)
    assert torch.equal(torch.isinf(got), ~held)
    assert (got[held] - want[held]).abs().max() <= 1e-5 * want[held].abs().max()


MAXNREG_SCRIPT = r'''
import torch
from unique_asr.kernels.select_pages import triton as sp

types = {"q_ptr": "*bf16", "table_ptr": "*i32", "lengths_ptr": "*i32", "mean_ptr": "*i8", "std_ptr": "*fp32",
         "sigma_ptr": "*i8", "kmin_ptr": "*i8", "kmax_ptr": "*i8", "scale_ptr": "*fp32",
         "scores_ptr": "*fp32", "lam": "fp32"}
for cap in (0, None, 48):
    cfg = sp.SelectConfig(score_maxnreg=cap)
    q = torch.zeros(1, 32, 64, dtype=torch.bfloat16)
    codes, scale = torch.zeros(1, 8, 64, dtype=torch.int8), torch.ones(1, 8)
    _, meta, launch = sp._launch_meta(q, codes, scale, None, None, None, scale, "unique", 8, 64, cfg)
    launch = dict(launch, **sp._register_cap(cfg, meta, "score"))
    meta = dict(meta, TC=5, FILL=False)  # the GPU's int8 products (the CPU build picks the interpreter's form)
    print(cap, launch.get("maxnreg"), resources(sp._score_kernel, types, meta, launch))
'''


def test_score_register_cap_reaches_ptxas():
    """SelectConfig.score_maxnreg is a launch option of the scoring kernels: the offline sm_90 build of the int8
    split scoring kernel at head_dim 64, with the launch options `_launch_meta` and `_register_cap` give (1 stage),
    uses at most the cap (48, also the default there) and no stack; with no cap (0) the compiler takes more. Bad
    values fail in the config."""
    rows = {line.split()[0]: line for line in run_build(MAXNREG_SCRIPT)}
    regs = {cap: int(line.split("REG:")[1].split()[0]) for cap, line in rows.items()}
    assert regs["48"] <= 48 < regs["0"] and "STACK:0 " in rows["48"], rows
    assert regs["None"] == regs["48"], rows
    for bad in (16, 300, -1):
        with pytest.raises(ValueError, match="score_maxnreg"):
            SelectConfig(score_maxnreg=bad)


@pytest.mark.parametrize("D, codes, want", [(64, "int8", 48), (128, "int8", None), (64, "bf16", None),
                                            (32, "int8", 48)])
def test_default_register_cap(D, codes, want):
    """score_maxnreg's default (None): 48 registers on the split scoring kernel for int8 products at head_dim <= 64
    only (measured faster there, slower or level elsewhere: SelectConfig's docstring), not on the split filter;
    0 and an explicit value win over it."""
    from unique_asr.kernels.select_pages import triton as sp

    q = torch.zeros(1, 32, D, dtype=torch.bfloat16)
    scale = torch.ones(4, 8) if codes == "int8" else None
    mean = torch.zeros(4, 8, D, dtype=torch.int8 if codes == "int8" else torch.bfloat16)
    std = torch.ones(4, 8)
    for cfg, expect in ((sp.SelectConfig(), want), (sp.SelectConfig(score_maxnreg=0), None),
                        (sp.SelectConfig(score_maxnreg=56), 56)):
        _, meta, launch = sp._launch_meta(q, mean, std, None, None, None, scale, "unique", 8, 64, cfg)
        assert "maxnreg" not in launch  # the cap is per kernel (the select kernel that scores itself: none)
        assert sp._register_cap(cfg, meta, "score").get("maxnreg") == expect, (cfg, meta["TC"])
        # the split filter (batch 1) keeps the default uncapped; an explicit cap applies to it too
        want_filter = None if cfg.score_maxnreg is None else expect
        assert sp._filter_launch(launch, meta, cfg).get("maxnreg") == want_filter
