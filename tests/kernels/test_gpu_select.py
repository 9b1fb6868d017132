"""GPU checks of the page-stat and selection kernels at model-sized shapes (skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch
from unique_asr.kernels.select_pages import SelectConfig, page_scores_naive, select_pages, select_pages_naive
from unique_asr.kernels.select_pages.registry import scores_for

from unique_asr.cache import PagedKVCache

SELECT_MODES = scores_for("select")  # every score the decode kernel runs (the registry)

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def paged_stats(lengths, Hkv, D, S, dtype, gen):
    """Random stats [P, Hkv, D] with each sequence's pages at shuffled physical ids (CUDA tensors)."""
    held = [-(-n // S) for n in lengths]
    M, P = max(held), sum(held)
    perm = torch.randperm(P, generator=gen).int()
    table = torch.full((len(lengths), M), -1, dtype=torch.int32)
    for b, start in enumerate(torch.tensor([0] + held).cumsum(0)[:-1].tolist()):
        table[b, :held[b]] = perm[start:start + held[b]]
    lo = torch.randn(P, Hkv, D, generator=gen)
    stats = dict(mean=torch.randn(P, Hkv, D, generator=gen), std=torch.rand(P, Hkv, generator=gen) * 4,
                 sigma=torch.rand(P, Hkv, D, generator=gen), kmin=lo,
                 kmax=lo + torch.rand(P, Hkv, D, generator=gen))
    stats = {n: t.cuda().to(torch.float32 if n == "std" else dtype) for n, t in stats.items()}
    return table.cuda(), torch.tensor(lengths, dtype=torch.int32, device="cuda"), stats


def check_topk(out, scores, table, lengths, k, S, tol):
    """Every row holds min(k, held) distinct held pages, -1 after, and is a top-k up to `tol`."""
    n_pages = (lengths.long() + S - 1) // S
    M = table.shape[1]
    held = torch.arange(M, device="cuda")[None] < n_pages[:, None]                       # [B, M]
    chosen = (table[:, None, :, None] == out[:, :, None, :]).any(-1) & held[:, None]      # [B, Hkv, M]
    assert torch.equal(chosen.sum(-1), n_pages.clamp(max=k)[:, None].expand_as(chosen.sum(-1)))
    assert torch.equal((out >= 0).sum(-1), chosen.sum(-1))
    worst_in = torch.where(chosen, scores, torch.inf).amin(-1)
    best_out = torch.where(held[:, None] & ~chosen, scores, -torch.inf).amax(-1)
    assert (worst_in >= best_out - tol).all()


@pytest.mark.parametrize("mode", SELECT_MODES)
@pytest.mark.parametrize("splits", [None, 1])
@pytest.mark.parametrize("scoring", ["dot", "fma", "tc"])
def test_select_bf16_model_shapes(mode, splits, scoring):
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    lengths = [8192, 3001, 512, 9, 20000]
    table, lens, st = paged_stats(lengths, 8, 128, 8, torch.bfloat16, gen)
    q = torch.randn(len(lengths), 32, 128, generator=gen).cuda().bfloat16()
    extra = {n: st[n] for n in ("sigma", "kmin", "kmax")}
    out = select_pages(q, table, lens, st["mean"], st["std"], k=64, page_size=8, mode=mode, splits=splits,
                       config=SelectConfig(fma=scoring == "fma", tc=scoring == "tc"), **extra)
    scores = page_scores_naive(q, table, lens, st["mean"], st["std"], page_size=8, mode=mode, **extra)
    # TC keeps q to 2^-16 (bf16 hi + lo): a top-k to 1e-2 of scores of magnitude ~10-100
    check_topk(out, scores, table, lens, 64, 8, tol=1e-2 if scoring == "tc" else 0.05)


@pytest.mark.parametrize("mode, code", [(m, c) for m in SELECT_MODES for c in (None, "fp8", "int8")
                                        if not (c and m == "quest")])  # quest reads no means
def test_tc_scores_equal_the_twin_on_the_tensor_cores(mode, code):
    """`score_pages` with TC scoring (bf16 tensor-core products) against the fp32 twin at model shapes:
    relative error <= 1e-4 of the largest score (the message also shows the default tf32 scoring's)."""
    from unique_asr.kernels.page_stats.naive import quantise_mean
    from unique_asr.kernels.select_pages import score_pages

    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    lengths = [8192, 3001, 9, 0]
    table, lens, st = paged_stats([max(n, 1) for n in lengths], 8, 128, 8, torch.bfloat16, gen)
    lens = torch.tensor(lengths, dtype=torch.int32, device="cuda")
    q = torch.randn(len(lengths), 32, 128, generator=gen).cuda().bfloat16()
    mean, scale = quantise_mean(st["mean"].float(), code) if code else (st["mean"], None)
    extra = dict(scale=scale, **{n: st[n] for n in ("sigma", "kmin", "kmax")})
    want = page_scores_naive(q, table, lens, mean, st["std"], page_size=8, mode=mode, **extra)
    fin = ~torch.isinf(want)
    errs = {}
    for name, cfg in (("tc", SelectConfig(tc=True)), ("tf32", SelectConfig(tc=False)),
                      ("int8_mma", SelectConfig(int8_mma=True))):
        got = score_pages(q, table, lens, mean, st["std"], page_size=8, mode=mode, config=cfg, **extra)
        assert torch.equal(torch.isinf(got), ~fin)
        errs[name] = ((got[fin] - want[fin]).abs().max() / want[fin].abs().max()).item()
    assert errs["tc"] <= 1e-4 and errs["int8_mma"] <= 1e-4, errs  # int8_mma: the tc path except for int8 codes


@pytest.mark.parametrize("keep", [(False, False), (True, True)])
def test_select_fp32_equals_twin(keep):
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    table, lens, st = paged_stats([4000, 700, 64, 1], 4, 64, 8, torch.float32, gen)
    q = torch.randn(4, 16, 64, generator=gen).cuda()
    kw = dict(k=32, page_size=8, keep_first=keep[0], keep_last=keep[1])
    want = select_pages_naive(q, table, lens, st["mean"], st["std"], **kw)
    configs = (SelectConfig(), SelectConfig(prefetch=False, block_r=1024), SelectConfig(single_read_max=0),
               SelectConfig(single_read_max=0, block_r=4096), SelectConfig(filter_split=128),
               SelectConfig(filter_split=1024), SelectConfig(fma=True), SelectConfig(fma=True, filter_split=256),
               SelectConfig(tc=True), SelectConfig(prefilter=False), SelectConfig(kth_bits=1),
               SelectConfig(kth_bits=8), SelectConfig(filter_split=128, split_radix=True),
               SelectConfig(filter_split=128, merge_bound=True),
               SelectConfig(block_r=256))  # fp32 statistics: tc falls back to the IEEE fp32 dot
    for splits in (None, 1, 5):
        for config in configs:
            got = select_pages(q, table, lens, st["mean"], st["std"], splits=splits, config=config, **kw)
            assert torch.equal(got, want), (splits, config)


@pytest.mark.parametrize("config", [SelectConfig(), SelectConfig(single_read_max=0),
                                    SelectConfig(filter_split=256), SelectConfig(prefilter=False),
                                    SelectConfig(filter_split=256, split_radix=True), SelectConfig(kth_bits=8),
                                    SelectConfig(filter_split=256, merge_bound=True)])
def test_longest_single_read_rows_equal_twin(config):
    """16K-page rows (128K tokens at S = 8, the single read's limit), 32/8 heads, D = 128, fp32 stats."""
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    table, lens, st = paged_stats([131072, 70001], 8, 128, 8, torch.float32, gen)
    q = torch.randn(2, 32, 128, generator=gen).cuda()
    kw = dict(k=64, page_size=8, keep_first=True, keep_last=True)
    got = select_pages(q, table, lens, st["mean"], st["std"], config=config, **kw)
    assert torch.equal(got, select_pages_naive(q, table, lens, st["mean"], st["std"], **kw))


def test_append_kernel_matches_twin_on_cuda():
    """fp32 activations written into bf16 pools: same rounding, same stats as the twin."""
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    caches = [PagedKVCache(num_layers=2, num_pages=600, page_size=8, num_kv_heads=8, head_dim=128,
                           max_batch=4, dtype=torch.bfloat16, device="cuda",
                           modes=SELECT_MODES, backend=b)
              for b in ("triton", "torch")]
    for counts in [[1500, 300, 7, 0]] + [[1, 1, 1, 1]] * 9 + [[0, 33, 2, 900]]:
        plans = [c.reserve(counts) for c in caches]
        for layer in range(2):
            k = torch.randn(sum(counts), 8, 128, generator=gen).cuda()
            v = torch.randn(sum(counts), 8, 128, generator=gen).cuda()
            for c, p in zip(caches, plans):
                c.append(layer, p, k, v)
    tri, ref = caches
    assert torch.equal(tri.k_pool, ref.k_pool) and torch.equal(tri.v_pool, ref.v_pool)
    for name in ("mean", "sigma", "kmin", "kmax"):
        torch.testing.assert_close(getattr(tri, name), getattr(ref, name), atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(tri.std, ref.std, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("config", [SelectConfig(filter_split=0), SelectConfig(filter_split=256), None,
                                    SelectConfig(fma=True), SelectConfig(tc=True),
                                    SelectConfig(tc=True, filter_split=256), SelectConfig(int8_mma=True),
                                    SelectConfig(int8_mma=True, filter_split=256), SelectConfig(score_maxnreg=48),
                                    SelectConfig(score_maxnreg=48, filter_split=256)])
@pytest.mark.parametrize("code", ["fp8", "int8"])
def test_coded_means_select_a_topk_at_model_shapes(config, code):
    """fp8 (e4m3) or int8 means + per-(page, head) scale, bf16 queries, 32/8 heads, D = 128, batch 1 and 5 (the
    default config takes the split-filter path at batch 1): a valid top-64 of the twin's scores, and
    the codes written by the append kernel equal the twin's (to one step)."""
    from unique_asr.kernels.page_stats.naive import quantise_mean

    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    for lengths in ([131072], [8192, 3001, 512, 9, 20000]):
        table, lens, st = paged_stats(lengths, 8, 128, 8, torch.bfloat16, gen)
        codes, scale = quantise_mean(st["mean"].float(), code)
        q = torch.randn(len(lengths), 32, 128, generator=gen).cuda().bfloat16()
        out = select_pages(q, table, lens, codes, st["std"], scale=scale, k=64, page_size=8, config=config)
        scores = page_scores_naive(q, table, lens, codes, st["std"], scale=scale, page_size=8)
        check_topk(out, scores, table, lens, 64, 8, tol=0.05)
    caches = [PagedKVCache(num_layers=1, num_pages=300, page_size=8, num_kv_heads=8, head_dim=128, max_batch=2,
                           dtype=torch.bfloat16, device="cuda", backend=b, stats_dtype=code)
              for b in ("triton", "torch")]
    for counts in [[1000, 77], [1, 1], [1, 0]]:
        k = torch.randn(sum(counts), 8, 128, generator=gen).cuda() * 3
        for c in caches:
            c.append(0, c.reserve(counts), k, k)
    tri, ref = caches
    torch.testing.assert_close(tri.scale, ref.scale, atol=1e-6, rtol=1e-5)
    step = ref.scale[..., None] * (32 if code == "fp8" else 1)  # one step (e4m3: at the top binade), dequantised
    assert ((tri.mean.float() * tri.scale[..., None] - ref.mean.float() * ref.scale[..., None]).abs()
            <= step + 1e-6).all()


@pytest.mark.parametrize("code", ["int8", "fp8"])
def test_refine_at_model_sizes_matches_twin_and_the_bf16_selection(code):
    """SparsityConfig.refine at the published shape (32 / 8 heads, D 128, S 8, k 64 + 4) on a 128K row and a
    mixed batch: the Triton re-ranking equals its twin on the same candidates (the kernel's fp32 products
    may order a near-tie differently: at most one page a row), and holds at least the int8 / e4m3
    selection's share of the bf16 pages (exactly so: every bf16 winner among the candidates is kept)."""
    from unique_asr.kernels.page_stats.naive import quantise_mean
    from unique_asr.kernels.select_pages import refine_pages, refine_pages_naive

    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    for lengths in ([131072], [8192, 3001, 512, 9, 20000]):
        table, lens, st = paged_stats(lengths, 8, 128, 8, torch.bfloat16, gen)
        codes, scale = quantise_mean(st["mean"].float(), code)
        q = torch.randn(len(lengths), 32, 128, generator=gen).cuda().bfloat16()
        kw = dict(page_size=8, keep_first=True, keep_last=True)
        cand = select_pages(q, table, lens, codes, st["std"], scale=scale, k=68, **kw)
        got = refine_pages(q, cand, table, lens, st["mean"], st["std"], k=64, **kw)
        twin = refine_pages_naive(q, cand, table, lens, st["mean"], st["std"], k=64, **kw)
        differ = (got[..., :, None] != twin[..., None, :]).all(-1).sum(-1)                  # [B, Hkv]
        assert int(differ.max()) <= 1
        bf16 = select_pages(q, table, lens, st["mean"], st["std"], k=64, **kw)
        plain = select_pages(q, table, lens, codes, st["std"], scale=scale, k=64, **kw)
        share = lambda a: (a[..., :, None] == bf16[..., None, :]).any(-2).logical_and(bf16 >= 0).sum()  # noqa: E731
        assert share(got) >= share(plain) - 2  # slack: the bf16 select's TC products vs the re-ranking's fp32


def test_window_pages_at_model_sizes_match_twin():
    """The `window` baseline's selection kernel on the GPU (16 rows of up to 3750 pages, 8 KV heads, k 64 and
    past the rows): equal to its twin."""
    from unique_asr.kernels.select_pages import window_pages, window_pages_naive

    gen = torch.Generator().manual_seed(0)
    table = torch.randperm(16 * 3750, generator=gen).view(16, 3750).int().cuda()
    lengths = torch.randint(0, 3750 * 8 + 1, (16,), generator=gen).int().cuda()
    for k in (64, 512, 4000):
        want = window_pages_naive(table, lengths, k=k, page_size=8, num_kv_heads=8)
        assert torch.equal(window_pages(table, lengths, k=k, page_size=8, num_kv_heads=8), want), k
