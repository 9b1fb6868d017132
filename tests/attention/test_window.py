"""The `window` mode: the sink page and the most recent pages, no scoring (twin `window_pages_naive`, Triton
`window_pages`, interpreter on CPU); attention over them equals dense attention over exactly those tokens."""

from __future__ import annotations

import pytest
import torch
from unique_asr.kernels.select_pages import window_pages, window_pages_naive

from unique_asr.attention import dense_attention, paged_decode_attention
from unique_asr.cache import PagedKVCache
from unique_asr.config import SparsityConfig

IMPLS = pytest.mark.parametrize("impl", [window_pages_naive, window_pages], ids=["naive", "triton"])


@IMPLS
def test_window_pages_are_the_sink_and_the_most_recent(impl):
    table = torch.tensor([[7, 3, 9, 1, 4, 6, -1, -1], [2, 5, -1, -1, -1, -1, -1, -1]], dtype=torch.int32)
    lengths = torch.tensor([22, 7], dtype=torch.int32)  # page 4: 6 pages held (the last partial); 2 pages held
    out = impl(table, lengths, k=3, page_size=4, num_kv_heads=2)
    assert out.shape == (2, 2, 3) and out.dtype == torch.int32
    assert out[0, 0].tolist() == [7, 4, 6]          # logical 0 (sink), 4, 5 (most recent)
    assert out[1, 1].tolist() == [2, 5, -1]         # holds fewer than k: every held page
    assert impl(table, lengths, k=1, page_size=4, num_kv_heads=1)[0, 0].tolist() == [6]


def test_triton_equals_twin_on_random_tables():
    """Rows from empty to full, k from 1 to past every row, 1-8 KV heads, page sizes 1-16."""
    gen = torch.Generator().manual_seed(0)
    for B, M, S, Hkv in ((5, 40, 8, 8), (3, 7, 1, 1), (9, 130, 16, 3)):
        table = torch.randperm(B * M, generator=gen).view(B, M).int()
        lengths = torch.randint(0, M * S + 1, (B,), generator=gen).int()
        lengths[0] = 0
        lengths[-1] = M * S
        for k in (1, 2, 5, M, M + 3):
            want = window_pages_naive(table, lengths, k=k, page_size=S, num_kv_heads=Hkv)
            assert torch.equal(window_pages(table, lengths, k=k, page_size=S, num_kv_heads=Hkv), want), (B, M, k)


@IMPLS
def test_bad_arguments_are_clear_errors(impl):
    table = torch.zeros(2, 4, dtype=torch.int32)
    lengths = torch.tensor([3, 4], dtype=torch.int32)
    with pytest.raises(ValueError, match="k must be a positive int"):
        impl(table, lengths, k=0, page_size=4, num_kv_heads=1)
    with pytest.raises(ValueError, match="page_table must have dtype"):
        impl(table.long(), lengths, k=2, page_size=4, num_kv_heads=1)
    with pytest.raises(ValueError, match="lengths must have shape"):
        impl(table, lengths[:1], k=2, page_size=4, num_kv_heads=1)


@pytest.mark.parametrize("backend", ["sparse-torch", "sparse-triton"])
def test_window_attention_equals_dense_over_its_tokens(backend):
    torch.manual_seed(0)
    S, Hkv, D, H = 4, 2, 16, 4
    dtype = torch.float32 if backend == "sparse-torch" else torch.bfloat16
    cache = PagedKVCache(num_layers=1, num_pages=16, page_size=S, num_kv_heads=Hkv, head_dim=D, max_batch=2,
                         dtype=dtype, modes=("dense",))
    lengths = [23, 9]
    k_all = [torch.randn(n, Hkv, D).to(dtype) for n in lengths]
    v_all = [torch.randn(n, Hkv, D).to(dtype) for n in lengths]
    cache.extend(lengths, [(torch.cat(k_all), torch.cat(v_all))])
    q = torch.randn(2, H, D).to(dtype)
    sparsity = SparsityConfig(mode="window", page_size=S, budget=3 * S)
    out = paged_decode_attention(q, cache.layer(0), cache.page_table, cache.lengths, sparsity, backend=backend)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for b, n in enumerate(lengths):
        pages = -(-n // S)
        keep = list(range(n)) if pages <= 3 else [*range(S), *range((pages - 2) * S, n)]
        ref = dense_attention(q[b:b + 1, None].float(), k_all[b][keep][None].float(), v_all[b][keep][None].float())
        torch.testing.assert_close(out[b:b + 1].float(), ref[:, 0], atol=tol, rtol=tol)
