"""Sparse decode attention with the page-mean estimate of unselected pages (SparsityConfig.unselected="estimate"):
the PyTorch twin against a per-(sequence, head) brute-force reading of its definition, the Triton kernels
(interpreter on CPU) against the twin, the full-selection no-op, and argument errors."""

from __future__ import annotations

import math

import pytest
import torch
from unique_asr.kernels.sparse_decode import (
    dense_paged_decode_attention_naive,
    sparse_decode_attention_estimate,
    sparse_decode_attention_estimate_naive,
    sparse_decode_attention_naive,
)

from unique_asr.attention import paged_decode_attention
from unique_asr.cache import PagedKVCache
from unique_asr.config import SparsityConfig

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"


def filled_cache(lengths, Hkv, D, S, dtype, stats_dtype="pool", seed=0, device=DEVICE):
    """A one-layer cache holding random keys / values for each sequence, built by the append path (so the
    key and value means are the cache's own statistics)."""
    gen = torch.Generator().manual_seed(seed)
    pages = sum(-(-n // S) for n in lengths) + 3
    cache = PagedKVCache(num_layers=1, num_pages=pages, page_size=S, num_kv_heads=Hkv, head_dim=D,
                         max_batch=len(lengths), dtype=dtype, device=device, stats_dtype=stats_dtype,
                         extra_statistics=("vmean",))
    n = sum(lengths)
    k = (torch.randn(n, Hkv, D, generator=gen) + torch.randn(1, Hkv, D, generator=gen)).to(device, dtype)
    v = torch.randn(n, Hkv, D, generator=gen).to(device, dtype)
    cache.extend(lengths, [(k, v)])
    return cache


def random_selection(cache, Hkv, k, seed=0, pad_one=True):
    """k distinct held pages per (sequence, KV head), random order, -1 padded (one extra -1 hole)."""
    gen = torch.Generator().manual_seed(seed + 1)
    S, lengths, table = cache.page_size, cache.lengths.cpu(), cache.page_table.cpu()
    ids = torch.full((lengths.shape[0], Hkv, k), -1, dtype=torch.int32)
    for b, n in enumerate(lengths.tolist()):
        held = -(-n // S)
        for h in range(Hkv):
            pick = torch.randperm(held, generator=gen)[:k]
            ids[b, h, :len(pick)] = table[b, pick]
    if pad_one:
        ids[0, 0, 0] = -1
    return ids.to(cache.device)


def brute_force(q, cache, ids, scale=None):
    """The definition, one (sequence, query head) at a time in fp64: softmax over the selected pages' keys
    and one term (log n_p + scale·q·mu_p, value vbar_p) per held unselected page, mu / vbar recomputed
    from the pools."""
    B, H, D = q.shape
    S, Hkv = cache.page_size, cache.k_pool.shape[3]
    G = H // Hkv
    scale = D ** -0.5 if scale is None else scale
    kp, vp = cache.k_pool[0].double().cpu(), cache.v_pool[0].double().cpu()
    out = torch.zeros(B, H, D, dtype=torch.float64)
    for b in range(B):
        n = int(cache.lengths[b])
        pages = cache.page_table[b, :-(-n // S)].tolist()
        for hq in range(H):
            h = hq // G
            chosen = set(ids[b, h].tolist()) - {-1}
            logits, values = [], []
            for lp, p in enumerate(pages):
                cnt = min(S, n - lp * S)
                keys, vals = kp[p, :cnt, h], vp[p, :cnt, h]
                qq = q[b, hq].double().cpu()
                if p in chosen:
                    logits += (keys @ qq * scale).tolist()
                    values += list(vals)
                else:
                    logits.append(math.log(cnt) + float(keys.mean(0) @ qq) * scale)
                    values.append(vals.mean(0))
            w = torch.softmax(torch.tensor(logits, dtype=torch.float64), 0)
            out[b, hq] = (w[:, None] * torch.stack(values)).sum(0)
    return out


@pytest.mark.parametrize("G, S, lengths", [(1, 8, [37, 80, 5]), (3, 4, [61, 9]), (4, 16, [100])])
def test_twin_matches_the_definition(G, S, lengths):
    Hkv, D = 2, 16
    cache = filled_cache(lengths, Hkv, D, S, torch.float32)
    layer = cache.layer(0)
    q = torch.randn(len(lengths), G * Hkv, D, device=DEVICE) * 2
    ids = random_selection(cache, Hkv, 3)
    out = sparse_decode_attention_estimate_naive(q, layer.k_pool, layer.v_pool, ids, cache.page_table, cache.lengths,
                                                 layer.stats.mean, layer.stats.vmean)
    torch.testing.assert_close(out.double().cpu(), brute_force(q, cache, ids), atol=1e-5, rtol=1e-5)


def test_full_selection_is_a_no_op():
    """Budget >= every held page: nothing is left out, so the estimate is exactly the sparse output, which is
    the dense output (fp32, up to summation order)."""
    Hkv, D, S, lengths = 2, 16, 8, [37, 80, 5]
    cache = filled_cache(lengths, Hkv, D, S, torch.float32)
    layer = cache.layer(0)
    q = torch.randn(3, 2 * Hkv, D, device=DEVICE) * 2
    ids = torch.full((3, Hkv, 12), -1, dtype=torch.int32, device=DEVICE)
    for b, n in enumerate(lengths):
        ids[b, :, : -(-n // S)] = cache.page_table[b, : -(-n // S)]
    args = (q, layer.k_pool, layer.v_pool, ids, cache.page_table, cache.lengths)
    est = sparse_decode_attention_estimate_naive(*args, layer.stats.mean, layer.stats.vmean)
    assert torch.equal(est, sparse_decode_attention_naive(*args))
    dense = dense_paged_decode_attention_naive(q, layer.k_pool, layer.v_pool, cache.page_table, cache.lengths)
    torch.testing.assert_close(est, dense, atol=1e-6, rtol=1e-6)
    # and through the attention entry point at a budget that holds every page
    sp = SparsityConfig(mode="unique", page_size=S, budget=12 * S, backend="sparse-torch", unselected="estimate")
    torch.testing.assert_close(paged_decode_attention(q, layer, cache.page_table, cache.lengths, sp), dense,
                               atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("G, D, dtype, stats_dtype, lengths", [
    (1, 64, torch.bfloat16, "pool", [37, 80, 5]),
    (3, 32, torch.float16, "fp8", [61, 130]),
    (3, 32, torch.bfloat16, "int8", [61, 130]),
    (4, 128, torch.bfloat16, "pool", [100, 23]),
    (2, 64, torch.float16, "pool", [9]),
])
def test_triton_matches_twin(G, D, dtype, stats_dtype, lengths):
    Hkv, S, k = 2, 8, 4
    cache = filled_cache(lengths, Hkv, D, S, dtype, stats_dtype=stats_dtype)
    layer = cache.layer(0)
    q = (torch.randn(len(lengths), G * Hkv, D, device=DEVICE) * 2).to(dtype)
    ids = random_selection(cache, Hkv, k)
    args = (q, layer.k_pool, layer.v_pool, ids, cache.page_table, cache.lengths, layer.stats.mean,
            layer.stats.vmean)
    ref = sparse_decode_attention_estimate_naive(*args, key_scale=layer.stats.scale)
    out = sparse_decode_attention_estimate(*args, key_scale=layer.stats.scale)
    err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
    assert err < {torch.bfloat16: 1.5e-2, torch.float16: 3e-3}[dtype], err
    # the estimate moved the output (else this test could not tell the two kernels apart)
    drop = sparse_decode_attention_naive(*args[:6])
    assert ((drop.float() - ref.float()).norm() / ref.float().norm()).item() > 10 * err


def test_triton_full_selection_equals_sparse_kernel():
    from unique_asr.kernels.sparse_decode import sparse_decode_attention

    Hkv, D, S, lengths = 2, 64, 8, [37, 80]
    cache = filled_cache(lengths, Hkv, D, S, torch.bfloat16)
    layer = cache.layer(0)
    q = torch.randn(2, Hkv, D, device=DEVICE).to(torch.bfloat16)
    ids = torch.full((2, Hkv, 10), -1, dtype=torch.int32, device=DEVICE)
    for b, n in enumerate(lengths):
        ids[b, :, : -(-n // S)] = cache.page_table[b, : -(-n // S)]
    args = (q, layer.k_pool, layer.v_pool, ids, cache.page_table, cache.lengths)
    out = sparse_decode_attention_estimate(*args, layer.stats.mean, layer.stats.vmean)
    torch.testing.assert_close(out, sparse_decode_attention(*args), atol=1e-2, rtol=1e-2)


def test_backends_agree_through_the_entry_point():
    """paged_decode_attention with unselected="estimate": sparse-torch and sparse-triton (interpreted) pick
    the same pages and give the same output; "drop" differs from both."""
    Hkv, D, S, lengths = 2, 32, 8, [150, 150]
    cache = filled_cache(lengths, Hkv, D, S, torch.float16)
    layer = cache.layer(0)
    q = (torch.randn(2, 2 * Hkv, D, device=DEVICE) * 2).to(torch.float16)
    outs = {}
    for backend in ("sparse-torch", "sparse-triton"):
        for unselected in ("drop", "estimate"):
            sp = SparsityConfig(mode="unique", page_size=S, budget=40, backend=backend, unselected=unselected)
            outs[backend, unselected] = paged_decode_attention(q, layer, cache.page_table, cache.lengths, sp).float()
    ref = outs["sparse-torch", "estimate"]
    assert ((outs["sparse-triton", "estimate"] - ref).norm() / ref.norm()).item() < 3e-3
    assert ((outs["sparse-torch", "drop"] - ref).norm() / ref.norm()).item() > 3e-2


@pytest.mark.parametrize("mode", ["quest", "mean", "perdim", "window"])
def test_every_mode_runs_with_the_estimate(mode):
    """The estimate is independent of the score: each mode's cache keeps the value means it needs."""
    S, D, Hkv = 8, 16, 2
    sp = SparsityConfig(mode=mode, page_size=S, budget=24, backend="sparse-torch", unselected="estimate")
    cache = PagedKVCache(num_layers=1, num_pages=20, page_size=S, num_kv_heads=Hkv, head_dim=D, max_batch=1,
                         dtype=torch.float32, device=DEVICE, modes=("dense" if mode == "window" else mode,),
                         extra_statistics=sp.extra_statistics)
    kv = torch.randn(100, Hkv, D, device=DEVICE)
    cache.extend([100], [(kv, kv.flip(0).contiguous())])
    q = torch.randn(1, Hkv, D, device=DEVICE)
    layer = cache.layer(0)
    est = paged_decode_attention(q, layer, cache.page_table, cache.lengths, sp)
    drop = paged_decode_attention(q, layer, cache.page_table, cache.lengths,
                                  SparsityConfig(mode=mode, page_size=S, budget=24, backend="sparse-torch"))
    dense = dense_paged_decode_attention_naive(q, layer.k_pool, layer.v_pool, cache.page_table, cache.lengths)
    assert torch.isfinite(est).all() and not torch.allclose(est, drop)
    assert (est - dense).norm() < (drop - dense).norm() * 1.5  # an estimate, not a wild one


def test_bad_values():
    with pytest.raises(ValueError, match="unselected 'keep' is not one of drop, estimate"):
        SparsityConfig(mode="unique", unselected="keep")
    assert SparsityConfig(mode="dense", unselected="estimate").extra_statistics == ()
    Hkv, D, S = 2, 16, 8
    cache = filled_cache([40], Hkv, D, S, torch.bfloat16)
    layer = cache.layer(0)
    q = torch.randn(1, Hkv, D, device=DEVICE).to(torch.bfloat16)
    ids = random_selection(cache, Hkv, 2, pad_one=False)
    args = (q, layer.k_pool, layer.v_pool, ids, cache.page_table, cache.lengths)
    for fn in (sparse_decode_attention_estimate_naive, sparse_decode_attention_estimate):
        with pytest.raises(ValueError, match="value_mean must have shape"):
            fn(*args, layer.stats.mean, layer.stats.vmean[:, :1])
        with pytest.raises(ValueError, match=r"key_scale must be given exactly when key_mean holds codes \(fp8 or int8\)"):
            fn(*args, layer.stats.mean, layer.stats.vmean, key_scale=torch.ones(layer.stats.std.shape))
    plain = PagedKVCache(num_layers=1, num_pages=8, page_size=S, num_kv_heads=Hkv, head_dim=D, max_batch=1,
                         dtype=torch.bfloat16, device=DEVICE)
    plain.extend([40], [(torch.randn(40, Hkv, D, device=DEVICE).to(torch.bfloat16),) * 2])
    sp = SparsityConfig(mode="unique", page_size=S, budget=16, backend="sparse-torch", unselected="estimate")
    with pytest.raises(ValueError, match="value means"):
        paged_decode_attention(q, plain.layer(0), plain.page_table, plain.lengths, sp)
    with pytest.raises(ValueError, match="cache statistics"):
        PagedKVCache(num_layers=1, num_pages=8, page_size=S, num_kv_heads=Hkv, head_dim=D, max_batch=1,
                     extra_statistics=("vbar",))


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("G, D, stats_dtype, B", [(1, 64, "pool", 80), (3, 64, "fp8", 4), (8, 128, "pool", 1)])
def test_gpu_real_sizes(G, D, stats_dtype, B):
    """Whisper-like (G 1, 188 pages of 8, k 64) and LLM-like (GQA, long rows) shapes on the GPU, split-K
    included (batch 1)."""
    Hkv, S, k = 4, 8, 64
    lengths = [1500] * B if B > 4 else [4096 + 13 * b for b in range(B)]
    cache = filled_cache(lengths, Hkv, D, S, torch.bfloat16, stats_dtype=stats_dtype)
    layer = cache.layer(0)
    q = (torch.randn(B, G * Hkv, D, device=DEVICE) * 2).to(torch.bfloat16)
    ids = random_selection(cache, Hkv, k)
    args = (q, layer.k_pool, layer.v_pool, ids, cache.page_table, cache.lengths, layer.stats.mean,
            layer.stats.vmean)
    ref = sparse_decode_attention_estimate_naive(*args, key_scale=layer.stats.scale)
    out = sparse_decode_attention_estimate(*args, key_scale=layer.stats.scale)
    assert ((out.float() - ref.float()).norm() / ref.float().norm()).item() < 1.5e-2


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_gpu_bench_script_times_and_checks_a_small_shape():
    from script_loader import load_script

    bench = load_script("bench_estimate")
    r = bench.bench_shape("small", (4, 2, 4, 64, 300, 8, 8), 20)
    assert r["rel_error_vs_twin"] < 1.5e-2 and r["drop_us"] > 0 and r["estimate_us"] > 0
