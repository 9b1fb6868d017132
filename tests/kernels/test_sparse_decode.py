"""Triton paged decode attention vs its PyTorch twin (interpreter on CPU, real sizes on CUDA)."""

from __future__ import annotations

import pytest
import torch

from unique_asr.attention.dense import dense_attention
from unique_asr.kernels.sparse_decode import (
    DecodeConfig,
    dense_paged_decode_attention,
    dense_paged_decode_attention_naive,
    sparse_decode_attention,
    sparse_decode_attention_naive,
)

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"


def make_cache(lengths, Hkv, D, S, dtype, device=DEVICE, spare_pages=3):
    """Pools [P, S, Hkv, D] with each sequence's pages scattered at random physical ids.

    Returns k_pool, v_pool, page_table int32 [B, M] (-1 padded), lengths int32 [B]."""
    held = [(n + S - 1) // S for n in lengths]
    P = sum(held) + spare_pages
    k_pool = torch.randn(P, S, Hkv, D, device=device).to(dtype)
    v_pool = torch.randn(P, S, Hkv, D, device=device).to(dtype)
    perm = torch.randperm(P, device=device).to(torch.int32)
    table = torch.full((len(lengths), max(max(held), 1) + 1), -1, dtype=torch.int32, device=device)
    start = 0
    for b, n in enumerate(held):
        table[b, :n] = perm[start:start + n]
        start += n
    return k_pool, v_pool, table, torch.tensor(lengths, dtype=torch.int32, device=device)


def random_selection(table, lengths, Hkv, k, S, with_last=False):
    """k distinct held pages per (sequence, KV head) in random order, -1 padded: [B, Hkv, k] int32.
    with_last puts each sequence's (partial) last page in slot 0."""
    B = table.shape[0]
    ids = torch.full((B, Hkv, k), -1, dtype=torch.int32, device=table.device)
    for b in range(B):
        held = (int(lengths[b]) + S - 1) // S
        for h in range(Hkv):
            pick = torch.randperm(held - with_last, device=table.device)[: k - with_last]
            if with_last:
                pick = torch.cat([torch.tensor([held - 1], device=table.device), pick])
            ids[b, h, : len(pick)] = table[b, pick]
    return ids


def rel_err(out, ref):
    assert not torch.isnan(out).any()
    return ((out.float() - ref.float()).norm() / ref.float().norm().clamp_min(1e-12)).item()


TOL = {torch.bfloat16: 1.5e-2, torch.float16: 3e-3}


def fp32_reference(fn, q, k_pool, v_pool, *rest):
    return fn(q.float(), k_pool.float(), v_pool.float(), *rest)


@pytest.mark.parametrize(
    "G, D, dtype, lengths",
    [
        (1, 64, torch.bfloat16, [37, 80, 5]),
        (4, 64, torch.float16, [61, 130]),
        (8, 128, torch.bfloat16, [100, 23]),
        (4, 128, torch.float16, [9]),
    ],
)
def test_sparse_matches_naive(G, D, dtype, lengths):
    Hkv, S, k = 2, 8, 5
    k_pool, v_pool, table, lens = make_cache(lengths, Hkv, D, S, dtype)
    q = torch.randn(len(lengths), G * Hkv, D, device=DEVICE).to(dtype)
    ids = random_selection(table, lens, Hkv, k, S, with_last=True)
    ids[-1, 0, -1] = -1  # -1 padding inside a selection
    out = sparse_decode_attention(q, k_pool, v_pool, ids, table, lens)
    ref = fp32_reference(sparse_decode_attention_naive, q, k_pool, v_pool, ids, table, lens)
    assert out.shape == q.shape and out.dtype == dtype
    assert rel_err(out, ref) < TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_full_budget_equals_dense_attention(dtype):
    """All pages selected, in shuffled order, and the dense paged path both equal contiguous dense attention;
    the long sequence forces several splits and the log-sum-exp merge."""
    Hkv, G, D, S = 2, 4, 64, 8
    lengths = [700, 45]
    k_pool, v_pool, table, lens = make_cache(lengths, Hkv, D, S, dtype)
    q = torch.randn(2, G * Hkv, D, device=DEVICE).to(dtype)
    M = table.shape[1]
    ids = random_selection(table, lens, Hkv, M + 2, S)  # budget above all pages: -1 padded
    kc = k_pool[table.clamp(min=0).long()].reshape(2, M * S, Hkv, D)
    vc = v_pool[table.clamp(min=0).long()].reshape(2, M * S, Hkv, D)
    ref = dense_attention(q.float()[:, None], kc.float(), vc.float(), key_lengths=lens)[:, 0]
    sparse = sparse_decode_attention(q, k_pool, v_pool, ids, table, lens)
    dense = dense_paged_decode_attention(q, k_pool, v_pool, table, lens)
    assert rel_err(sparse, ref) < TOL[dtype]
    assert rel_err(dense, ref) < TOL[dtype]
    naive = dense_paged_decode_attention_naive(q.float(), k_pool.float(), v_pool.float(), table, lens)
    assert rel_err(naive, ref) < 1e-5


def test_k1_single_page_and_empty_selection():
    Hkv, G, D, S = 2, 4, 64, 8
    k_pool, v_pool, table, lens = make_cache([6, 50], Hkv, D, S, torch.bfloat16)  # first: one partial page
    q = torch.randn(2, G * Hkv, D, device=DEVICE).to(torch.bfloat16)
    ids = random_selection(table, lens, Hkv, 1, S)
    ids[1, 1] = -1  # nothing selected for this head: zeros, never NaN
    out = sparse_decode_attention(q, k_pool, v_pool, ids, table, lens)
    ref = fp32_reference(sparse_decode_attention_naive, q, k_pool, v_pool, ids, table, lens)
    assert rel_err(out, ref) < TOL[torch.bfloat16]
    assert torch.all(out[1, G:2 * G] == 0)
    single = sparse_decode_attention(q[:1], k_pool, v_pool, ids[:1], table[:1], lens[:1])
    kc, vc = k_pool[table[0, 0].long(), :6], v_pool[table[0, 0].long(), :6]
    dense = dense_attention(q[:1, None].float(), kc[None].float(), vc[None].float())[:, 0]
    assert rel_err(single, dense) < TOL[torch.bfloat16]


def test_bad_inputs_raise_value_error():
    Hkv, G, D, S = 2, 2, 64, 8
    k_pool, v_pool, table, lens = make_cache([20, 9], Hkv, D, S, torch.bfloat16)
    q = torch.randn(2, G * Hkv, D, device=DEVICE).to(torch.bfloat16)
    ids = random_selection(table, lens, Hkv, 2, S)
    cases = [
        (q.float(), k_pool, v_pool, ids, table, lens),  # dtype mismatch
        (q.float(), k_pool.float(), v_pool.float(), ids, table, lens),  # fp32 is not a kernel dtype
        (q[..., :32], k_pool, v_pool, ids, table, lens),  # head dim mismatch
        (q[:, :3], k_pool, v_pool, ids, table, lens),  # H % Hkv != 0
        (q, k_pool, v_pool, ids.long(), table, lens),  # int64 ids
        (q, k_pool, v_pool, ids[:, :1], table, lens),  # ids not [B, Hkv, k]
        (q, k_pool, v_pool, ids, table, lens[:1]),  # lengths not [B]
        (q[0], k_pool, v_pool, ids, table, lens),  # q not 3-D
    ]
    for args in cases:
        with pytest.raises(ValueError):
            sparse_decode_attention(*args)
    q96 = torch.randn(2, G * Hkv, 96, device=DEVICE).to(torch.bfloat16)
    pool96 = torch.randn(k_pool.shape[0], S, Hkv, 96, device=DEVICE).to(torch.bfloat16)
    with pytest.raises(ValueError):
        dense_paged_decode_attention(q96, pool96, pool96, table, lens)
    with pytest.raises(ValueError):
        dense_paged_decode_attention(q, k_pool, v_pool, table.long(), lens)


@pytest.mark.parametrize("G, D, dtype", [(4, 128, torch.bfloat16), (1, 64, torch.float16), (8, 128, torch.float16)])
@pytest.mark.parametrize("B", [1, 6])
@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_gpu_real_sizes(G, D, dtype, B):
    """Published shapes (Hkv = 8, S = 8, k = 64) at tens of thousands of tokens, ragged batch."""
    Hkv, S, k = 8, 8, 64
    lengths = [32768 - 3 * b * 977 for b in range(B)]
    k_pool, v_pool, table, lens = make_cache(lengths, Hkv, D, S, dtype)
    q = torch.randn(B, G * Hkv, D, device=DEVICE).to(dtype)
    ids = random_selection(table, lens, Hkv, k, S, with_last=True)
    out = sparse_decode_attention(q, k_pool, v_pool, ids, table, lens)
    ref = fp32_reference(sparse_decode_attention_naive, q, k_pool, v_pool, ids, table, lens)
    assert rel_err(out, ref) < TOL[dtype]
    dense = dense_paged_decode_attention(q, k_pool, v_pool, table, lens)
    dref = fp32_reference(dense_paged_decode_attention_naive, q, k_pool, v_pool, table, lens)
    assert rel_err(dense, dref) < TOL[dtype]


@pytest.mark.parametrize("prefetch", [False, True])
def test_launch_configs_agree(prefetch):
    """Many splits (> 32: the merge reads them in chunks) and one-step-ahead page-id loads give the same
    result as the twin, for the sparse and the dense path."""
    Hkv, G, D, S = 1, 4, 64, 8
    k_pool, v_pool, table, lens = make_cache([600, 333], Hkv, D, S, torch.float16)
    q = torch.randn(2, G * Hkv, D, device=DEVICE).to(torch.float16)
    ids = random_selection(table, lens, Hkv, 70, S, with_last=True)
    cfg = DecodeConfig(block_n=16, programs_per_sm=64, min_split_tokens=8, prefetch_ids=prefetch)
    out = sparse_decode_attention(q, k_pool, v_pool, ids, table, lens, config=cfg)
    ref = fp32_reference(sparse_decode_attention_naive, q, k_pool, v_pool, ids, table, lens)
    assert rel_err(out, ref) < TOL[torch.float16]
    dense = dense_paged_decode_attention(q, k_pool, v_pool, table, lens, config=cfg)
    dref = fp32_reference(dense_paged_decode_attention_naive, q, k_pool, v_pool, table, lens)
    assert rel_err(dense, dref) < TOL[torch.float16]
