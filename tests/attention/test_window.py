"""The `window` mode: the sink page and the most recent pages, no scoring; attention over them equals dense
attention over exactly those tokens."""

from __future__ import annotations

import torch

from unique_asr.attention import dense_attention, paged_decode_attention
from unique_asr.attention.window import window_pages
from unique_asr.cache import PagedKVCache
from unique_asr.config import SparsityConfig


def test_window_pages_are_the_sink_and_the_most_recent():
    table = torch.tensor([[7, 3, 9, 1, 4, 6, -1, -1], [2, 5, -1, -1, -1, -1, -1, -1]], dtype=torch.int32)
    lengths = torch.tensor([22, 7])  # page 4: 6 pages held (the last partial); 2 pages held
    out = window_pages(table, lengths, k=3, page_size=4, num_kv_heads=2)
    assert out.shape == (2, 2, 3)
    assert out[0, 0].tolist() == [7, 4, 6]          # logical 0 (sink), 4, 5 (most recent)
    assert out[1, 1].tolist() == [2, 5, -1]         # holds fewer than k: every held page
    assert window_pages(table, lengths, k=1, page_size=4, num_kv_heads=1)[0, 0].tolist() == [6]


def test_window_attention_equals_dense_over_its_tokens():
    torch.manual_seed(0)
    S, Hkv, D, H = 4, 2, 8, 4
    cache = PagedKVCache(num_layers=1, num_pages=16, page_size=S, num_kv_heads=Hkv, head_dim=D, max_batch=2,
                         dtype=torch.float32, modes=("dense",))
    lengths = [23, 9]
    k_all = [torch.randn(n, Hkv, D) for n in lengths]
    v_all = [torch.randn(n, Hkv, D) for n in lengths]
    cache.extend(lengths, [(torch.cat(k_all), torch.cat(v_all))])
    q = torch.randn(2, H, D)
    sparsity = SparsityConfig(mode="window", page_size=S, budget=3 * S)
    out = paged_decode_attention(q, cache.layer(0), cache.page_table, cache.lengths, sparsity,
                                 backend="sparse-torch")
    for b, n in enumerate(lengths):
        pages = -(-n // S)
        keep = list(range(n)) if pages <= 3 else [*range(S), *range((pages - 2) * S, n)]
        ref = dense_attention(q[b:b + 1, None], k_all[b][keep][None], v_all[b][keep][None])[:, 0]
        torch.testing.assert_close(out[b:b + 1], ref, atol=1e-5, rtol=1e-5)
