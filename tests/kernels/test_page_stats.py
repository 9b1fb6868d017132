"""Fused K/V append + incremental page statistics: Triton (interpreter on CPU) vs the PyTorch twin, and
incremental stats vs stats computed from scratch."""

from __future__ import annotations

import pytest
import torch
from unique_asr.kernels.page_stats import PageStats, StatAccumulators, append_kv, append_kv_naive
from unique_asr.kernels.select_pages.registry import scores_for

from unique_asr.cache import PagedKVCache

SELECT_MODES = scores_for("select")  # every score the decode kernel runs (the registry)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ALL_MODES = SELECT_MODES


def make_cache(backend, dtype, B=3, Hkv=2, D=16, S=4, L=2, pages=40, stats_dtype="pool"):
    return PagedKVCache(num_layers=L, num_pages=pages, page_size=S, num_kv_heads=Hkv, head_dim=D, max_batch=B,
                        dtype=dtype, device=DEVICE, modes=ALL_MODES, backend=backend, stats_dtype=stats_dtype,
                        extra_statistics=("vmean",))


def run_schedule(caches, schedule, Hkv, D, L, gen, values=None):
    """Apply the same appends (list of per-sequence token counts per step) to every cache; returns the keys
    each (sequence, layer) received, in order (and fills `values` likewise when given)."""
    keys, vals = {}, {}
    for counts in schedule:
        plans = [c.reserve(counts) for c in caches]
        for layer in range(L):
            # new tokens arrive in the pool dtype, as a model in that dtype produces them
            k = torch.randn(sum(counts), Hkv, D, generator=gen).to(DEVICE, caches[0].k_pool.dtype)
            v = torch.randn(sum(counts), Hkv, D, generator=gen).to(DEVICE, caches[0].k_pool.dtype)
            for c, p in zip(caches, plans):
                c.append(layer, p, k, v)
            start = 0
            for b, n in enumerate(counts):
                keys.setdefault((b, layer), []).append(k[start:start + n])
                vals.setdefault((b, layer), []).append(v[start:start + n])
                start += n
    if values is not None:
        values.update({key: torch.cat(chunks) for key, chunks in vals.items()})
    return {key: torch.cat(chunks) for key, chunks in keys.items()}


def scratch_stats(keys, dtype):
    """Stats of keys [n, Hkv, D] (rounded to the pool dtype) from scratch in fp64."""
    x = keys.to(dtype).double()
    mu = x.mean(0)
    var = x.var(0, unbiased=False)
    return mu, var.sum(-1).sqrt(), var.sqrt(), x.amin(0), x.amax(0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_triton_append_matches_naive(dtype):
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    tri, ref = make_cache("triton", dtype), make_cache("torch", dtype)
    schedule = [[7, 0, 3], [1, 1, 1], [0, 5, 1], [1, 1, 0], [9, 1, 4], [1, 1, 1]]
    run_schedule([tri, ref], schedule, 2, 16, 2, gen)
    assert torch.equal(tri.page_table, ref.page_table) and torch.equal(tri.lengths, ref.lengths)
    assert torch.equal(tri.k_pool, ref.k_pool) and torch.equal(tri.v_pool, ref.v_pool)
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}
    for name in ("mean", "std", "sigma", "kmin", "kmax", "vmean"):
        torch.testing.assert_close(getattr(tri, name).float(), getattr(ref, name).float(), **tol, msg=name)
    torch.testing.assert_close(tri.acc_mean, ref.acc_mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tri.acc_vmean, ref.acc_vmean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tri.acc_m2, ref.acc_m2, atol=1e-4, rtol=1e-4)


# one code step at the largest magnitudes, in code units: e4m3's top binade (256..448) has steps of 32
CODE_STEP = {"fp8": 32, "int8": 1}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("code", ["fp8", "int8"])
def test_coded_means_triton_match_naive_and_scratch(dtype, code):
    """fp8 (e4m3) or int8 means with a per-(page, head) scale max|mu| / CODE_MAX: Triton and the twin store the
    same codes up to one step (the scale's division may round differently; int8: one integer), the largest
    dimension gets the largest code, and the dequantised mean is the page's mean within half a step."""
    from unique_asr.kernels._checks import CODE_DTYPES
    from unique_asr.kernels.select_pages.registry import CODE_MAX

    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    tri, ref = (make_cache(b, dtype, stats_dtype=code) for b in ("triton", "torch"))
    assert tri.mean.dtype == CODE_DTYPES[code] and "scale" in tri.statistics and tri.vmean.dtype == dtype
    keys = run_schedule([tri, ref], [[7, 0, 3], [1, 1, 1], [0, 5, 1], [9, 1, 4], [1, 1, 1]], 2, 16, 2, gen)
    torch.testing.assert_close(tri.scale, ref.scale, atol=1e-6, rtol=1e-5)
    deq = {c: c.mean.float() * c.scale[..., None] for c in (tri, ref)}
    step = CODE_STEP[code]
    assert ((deq[tri] - deq[ref]).abs() <= ref.scale[..., None] * step + 1e-6).all()
    if code == "int8":
        assert ((tri.mean.int() - ref.mean.int()).abs() <= 1).all()
    slack = 1e-5 if code == "int8" else 0.0  # int8: the scale's own rounding (its codes sit at the step's edge)
    for (b, layer), k in keys.items():
        S, n = 4, k.shape[0]
        for lp in range(-(-n // S)):
            page = int(ref.page_table[b, lp])
            mu = k[lp * S:(lp + 1) * S].float().mean(0)                     # [Hkv, D]
            amax = mu.abs().amax(-1, keepdim=True)
            half_step = amax / CODE_MAX[code] * step / 2
            assert ((deq[ref][layer, page] - mu).abs() <= half_step * (1 + slack) + 1e-6).all()
            assert (tri.mean[layer, page].float().abs().amax(-1) == CODE_MAX[code]).all()


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_incremental_stats_equal_scratch(backend):
    """Many single-token appends (with idle steps) and one big prefill give the stats of the held keys."""
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    cache = make_cache(backend, torch.float32, pages=60)
    schedule = [[1, 0, 1] if i % 3 else [1, 1, 1] for i in range(22)] + [[0, 0, 37]]
    values = {}
    keys = run_schedule([cache], schedule, 2, 16, 2, gen, values)
    S = cache.page_size
    for (b, layer), k in keys.items():
        assert cache.lengths[b].item() == k.shape[0]
        for lp in range(-(-k.shape[0] // S)):
            page = cache.page_table[b, lp].item()
            mu, std, sigma, lo, hi = scratch_stats(k[lp * S:(lp + 1) * S], torch.float32)
            vbar = values[b, layer][lp * S:(lp + 1) * S].double().mean(0)
            got = (cache.mean, cache.std, cache.sigma, cache.kmin, cache.kmax, cache.vmean)
            for g, want in zip(got, (mu, std, sigma, lo, hi, vbar)):
                torch.testing.assert_close(g[layer, page].double(), want.to(DEVICE), atol=1e-5, rtol=1e-5)


def test_whole_window_build_is_one_append():
    """A whole memory (an encoder window) built in one append has the stats from scratch, partial tail too."""
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    cache = PagedKVCache(num_layers=1, num_pages=64, page_size=8, num_kv_heads=4, head_dim=32, max_batch=2,
                         dtype=torch.bfloat16, device=DEVICE, backend="triton")
    frames = torch.randn(2 * 150, 4, 32, generator=gen).to(DEVICE, torch.bfloat16)
    cache.extend([150, 150], [(frames, frames)])
    for b in range(2):
        mem = frames[b * 150:(b + 1) * 150]
        for lp in range(19):
            page = cache.page_table[b, lp].item()
            mu, std, *_ = scratch_stats(mem[lp * 8:(lp + 1) * 8], torch.bfloat16)
            torch.testing.assert_close(cache.mean[0, page].double(), mu.to(DEVICE), atol=1e-2, rtol=1e-2)
            torch.testing.assert_close(cache.std[0, page].double(), std.to(DEVICE), atol=1e-5, rtol=1e-5)


def _layer_args(P=6, S=4, Hkv=2, D=8, B=2, dtype=torch.float32):
    pool = torch.zeros(P, S, Hkv, D, dtype=dtype)
    stats = PageStats(torch.zeros(P, Hkv, D, dtype=dtype), torch.zeros(P, Hkv))
    acc = StatAccumulators(torch.zeros(B, Hkv, D), torch.zeros(B, Hkv))
    work = torch.tensor([[0, 1, 0, 2, 0, 1]], dtype=torch.int32)
    return dict(k=torch.randn(2, Hkv, D), v=torch.randn(2, Hkv, D), work=work, k_pool=pool,
                v_pool=pool.clone(), stats=stats, acc_in=acc, acc_out=acc)


@pytest.mark.parametrize("fn", [append_kv, append_kv_naive])
@pytest.mark.parametrize("bad", ["work_dtype", "k_heads", "pool_dtype", "std_dtype", "minmax_pair", "m2d"])
def test_bad_inputs_raise_value_error(fn, bad):
    args = _layer_args()
    if bad == "work_dtype":
        args["work"] = args["work"].long()
    elif bad == "k_heads":
        args["k"] = torch.randn(2, 3, 8)
    elif bad == "pool_dtype":
        args["v_pool"] = args["v_pool"].half()
    elif bad == "std_dtype":
        args["stats"] = args["stats"]._replace(std=args["stats"].std.half())
    elif bad == "minmax_pair":
        args["stats"] = args["stats"]._replace(kmin=torch.zeros(6, 2, 8))
    elif bad == "m2d":
        args["stats"] = args["stats"]._replace(sigma=torch.zeros(6, 2, 8))
    with pytest.raises(ValueError):
        fn(**args)


@pytest.mark.parametrize("code", ["fp8", "int8"])
def test_quantise_mean_error_is_half_a_step_of_the_largest_dimension(code):
    """`quantise_mean`: int8's step is uniform (max|mu| / 127); e4m3's is largest at the top binade."""
    from unique_asr.kernels._checks import CODE_DTYPES
    from unique_asr.kernels.page_stats.naive import quantise_mean
    from unique_asr.kernels.select_pages.registry import CODE_MAX

    mu = torch.randn(50, 3, 16) * torch.logspace(-3, 1, 16)
    mu[0, 0] = 0
    codes, scale = quantise_mean(mu, code)
    assert codes.dtype == CODE_DTYPES[code] and scale.shape == (50, 3)
    assert codes.float().abs().amax() == CODE_MAX[code]
    amax = mu.abs().amax(-1, keepdim=True)
    half_step = amax / CODE_MAX[code] * CODE_STEP[code] / 2
    assert ((codes.float() * scale[..., None] - mu).abs() <= half_step * (1 + 1e-6)).all()
    assert torch.equal(codes[0, 0].float(), torch.zeros(16)) and scale[0, 0] == 1
