"""The decode entry point over a real paged cache: backends agree, full budget equals dense attention."""

from __future__ import annotations

import logging

import pytest
import torch

from unique_asr.attention import dense_attention, get_backend, paged_decode_attention
from unique_asr.attention.registry import _resolve
from unique_asr.cache import PagedKVCache
from unique_asr.config import SparsityConfig

CUDA = torch.cuda.is_available()


def filled_cache(lengths, Hkv, D, S, dtype, device, modes=("unique", "quest")):
    """A one-layer PagedKVCache holding random keys/values for `lengths` tokens; also returns the
    contiguous k, v [B, max(lengths), Hkv, D] (zero padded) that were appended."""
    B, T = len(lengths), max(lengths)
    cache = PagedKVCache(num_layers=1, num_pages=sum(-(-n // S) for n in lengths) + 4, page_size=S,
                         num_kv_heads=Hkv, head_dim=D, max_batch=B, dtype=dtype, device=device, modes=modes)
    k = torch.zeros(B, T, Hkv, D, dtype=dtype, device=device)
    v = torch.zeros_like(k)
    for b, n in enumerate(lengths):
        k[b, :n] = torch.randn(n, Hkv, D, device=device).to(dtype)
        v[b, :n] = torch.randn(n, Hkv, D, device=device).to(dtype)
    plan = cache.reserve(lengths)
    pack = lambda t: torch.cat([t[b, :n] for b, n in enumerate(lengths)])
    cache.append(0, plan, pack(k), pack(v))
    return cache, k, v


def rel_err(out, ref):
    assert not torch.isnan(out).any()
    return ((out.float() - ref.float()).norm() / ref.float().norm()).item()


def decode(q, cache, sparsity, backend, **kw):
    return paged_decode_attention(q, cache.layer(0), cache.page_table, cache.lengths, sparsity, backend=backend, **kw)


@pytest.mark.parametrize("backend", ["dense", "sparse-torch", "sparse-triton"])
def test_full_budget_equals_dense_attention(backend):
    Hkv, G, D, S, lengths = 2, 4, 64, 8, [75, 30]
    cache, k, v = filled_cache(lengths, Hkv, D, S, torch.bfloat16, "cpu")
    q = torch.randn(2, G * Hkv, D).to(torch.bfloat16)
    lens = torch.tensor(lengths)
    ref = dense_attention(q[:, None].float(), k.float(), v.float(), key_lengths=lens)[:, 0]
    sparsity = SparsityConfig(mode="unique", page_size=S, budget=S * 16)  # 16 pages >= all held pages
    assert rel_err(decode(q, cache, sparsity, backend), ref) < 1.5e-2


@pytest.mark.parametrize("mode", ["unique", "quest"])
def test_triton_backend_matches_torch_backend(mode):
    Hkv, G, D, S, lengths = 2, 4, 64, 8, [90, 41, 7]
    cache, _, _ = filled_cache(lengths, Hkv, D, S, torch.float16, "cpu")
    q = torch.randn(3, G * Hkv, D).to(torch.float16)
    sparsity = SparsityConfig(mode=mode, page_size=S, budget=4 * S, keep_last=True)
    fast = decode(q, cache, sparsity, "sparse-triton")
    ref = decode(q.float(), _as_fp32(cache), sparsity, "sparse-torch")
    assert rel_err(fast, ref) < 3e-3
    dense = decode(q, cache, SparsityConfig(page_size=S), "sparse-torch")
    assert rel_err(fast, dense) > 1e-3  # 4 of up to 12 pages: a real subset, not the dense result


def _as_fp32(cache):
    """The same cache contents in fp32 (reference arithmetic); shares the page table and lengths."""
    class View:
        page_table, lengths = cache.page_table, cache.lengths

        @staticmethod
        def layer(i):
            lc = cache.layer(i)
            stats = type(lc.stats)(*(None if t is None else t.float() for t in lc.stats))
            return type(lc)(lc.k_pool.float(), lc.v_pool.float(), stats)
    return View


def test_dense_mode_and_dense_layers_skip_selection():
    Hkv, G, D, S, lengths = 2, 2, 64, 8, [70, 33]
    cache, k, v = filled_cache(lengths, Hkv, D, S, torch.float32, "cpu")
    q = torch.randn(2, G * Hkv, D)
    ref = dense_attention(q[:, None], k, v, key_lengths=torch.tensor(lengths))[:, 0]
    sparse = SparsityConfig(mode="unique", page_size=S, budget=2 * S, dense_layers=1)
    assert rel_err(decode(q, cache, sparse, "sparse-torch", layer_index=0), ref) < 1e-5
    assert rel_err(decode(q, cache, SparsityConfig(page_size=S), "sparse-torch"), ref) < 1e-5
    assert rel_err(decode(q, cache, sparse, "sparse-torch", layer_index=1), ref) > 1e-3


def test_backend_resolution_is_logged_and_forceable(caplog):
    _resolve.cache_clear()
    with caplog.at_level(logging.INFO, logger="unique_asr.attention.registry"):
        assert get_backend("auto", "cpu").name == "sparse-torch"
        assert get_backend("auto", "cuda").name == "sparse-triton"
        assert get_backend("dense", "cuda").select is None
        assert get_backend("auto", "cuda", torch.float32).name == "sparse-torch"  # the kernel takes bf16/fp16
    assert "sparse-torch on cpu" in caplog.text and "sparse-triton on cuda" in caplog.text
    assert get_backend("auto", "cpu") is get_backend("auto", torch.device("cpu"))  # resolved once
    with pytest.raises(ValueError):
        get_backend("flash", "cpu")
    cache, _, _ = filled_cache([20], 1, 64, 8, torch.float32, "cpu")
    with pytest.raises(ValueError):  # cache pages of 8 tokens, config says 16
        decode(torch.randn(1, 2, 64), cache, SparsityConfig(mode="unique", page_size=16, budget=32), "sparse-torch")


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_gpu_entry_point_real_sizes():
    """Published head layout (32/8 heads, D = 128, S = 8, T = 512) over ~20K-token ragged sequences."""
    Hkv, G, D, S, lengths = 8, 4, 128, 8, [20000, 13001, 4099]
    dev = torch.device("cuda", torch.cuda.current_device())  # the cache compares devices with their index
    cache, k, v = filled_cache(lengths, Hkv, D, S, torch.bfloat16, dev)
    q = torch.randn(3, G * Hkv, D, device=dev).to(torch.bfloat16)
    sparsity = SparsityConfig(mode="unique", page_size=S, budget=512)
    fast = decode(q, cache, sparsity, None)  # auto -> sparse-triton on CUDA
    ref = decode(q.float(), _as_fp32(cache), sparsity, "sparse-torch")
    assert rel_err(fast, ref) < 1.5e-2
    full = SparsityConfig(mode="unique", page_size=S, budget=S * 2500)
    dense = dense_attention(q[:, None].float(), k.float(), v.float(), key_lengths=torch.tensor(lengths, device=dev))
    assert rel_err(decode(q, cache, full, "sparse-triton"), dense[:, 0]) < 1.5e-2
