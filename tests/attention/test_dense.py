"""dense_attention, the reference every sparse path must equal: its causal form against the plain formula."""

from __future__ import annotations

import pytest
import torch
from unique_asr.attention import dense_attention


def _formula(q, k, v, scale, causal, key_lengths=None):
    """softmax(q k^T * scale + mask) v with GQA heads repeated and the mask written out (lower-right causal)."""
    B, Tq, H, D = q.shape
    Tk, Hkv = k.shape[1], k.shape[2]
    kk, vv = k.repeat_interleave(H // Hkv, 2).float(), v.repeat_interleave(H // Hkv, 2).float()
    s = torch.einsum("bqhd,bkhd->bhqk", q.float(), kk) * scale
    pos, qpos = torch.arange(Tk), torch.arange(Tq) + (Tk - Tq)
    keep = torch.ones(B, 1, Tq, Tk, dtype=torch.bool)
    if causal:
        keep &= (pos[None, :] <= qpos[:, None])[None, None]
    if key_lengths is not None:
        keep &= (pos < key_lengths[:, None])[:, None, None, :]
    return torch.einsum("bhqk,bkhd->bqhd", s.masked_fill(~keep, float("-inf")).softmax(-1), vv)


@pytest.mark.parametrize("Tq, Tk, H, Hkv", [(5, 12, 8, 2), (7, 7, 4, 4), (1, 9, 4, 2), (3, 40, 6, 3), (16, 17, 2, 1)])
def test_causal_chunk_over_cached_keys(Tq, Tk, H, Hkv):
    """A prefill chunk of Tq queries over Tk keys (the cached row and the chunk itself): query i sees keys up to
    Tk - Tq + i (bottom-right alignment), with GQA, with and without key lengths: equal to the formula."""
    g = torch.Generator().manual_seed(Tq * 100 + Tk)
    q, k, v = (torch.randn(2, t, h, 16, generator=g) for t, h in ((Tq, H), (Tk, Hkv), (Tk, Hkv)))
    torch.testing.assert_close(dense_attention(q, k, v, causal=True, scale=0.3), _formula(q, k, v, 0.3, True),
                               rtol=1e-5, atol=1e-5)
    lengths = torch.tensor([Tk, max(Tk - 1, 1)])
    if Tk - 1 >= Tq:  # every query keeps a key
        torch.testing.assert_close(dense_attention(q, k, v, causal=True, key_lengths=lengths),
                                   _formula(q, k, v, 16 ** -0.5, True, lengths), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_padded_keys_past_valid_keys_change_nothing(causal):
    """Keys padded past `valid_keys` (a key length bucketed so an attention backend reuses its plan) are masked and
    the causal alignment stays at the valid keys: equal to the call on the valid keys alone."""
    g = torch.Generator().manual_seed(5)
    q = torch.randn(3, 6, 8, 16, generator=g)
    k, v = (torch.randn(3, 29, 2, 16, generator=g) for _ in range(2))
    want = dense_attention(q, k[:, :21], v[:, :21], causal=causal)
    torch.testing.assert_close(dense_attention(q, k, v, causal=causal, valid_keys=21), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="valid_keys"):
        dense_attention(q, k, v, causal=causal, valid_keys=30)
    with pytest.raises(ValueError, match="valid_keys"):
        dense_attention(q, k, v, causal=True, valid_keys=5)  # fewer keys than causal queries
