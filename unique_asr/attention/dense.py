"""Dense attention over contiguous tensors (the reference every sparse path must equal at full budget)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dense_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    key_lengths: torch.Tensor | None = None,
    scale: float | None = None,
    valid_keys: int | None = None,
) -> torch.Tensor:
    """Exact softmax attention.

    q: [B, Tq, H, D]; k, v: [B, Tk, Hkv, D] with H % Hkv == 0 (GQA groups share a KV head);
    key_lengths: optional int [B], keys at positions >= length are masked;
    causal: query i (aligned to the end of the keys) sees keys <= Tk - Tq + i.
    valid_keys: only the first valid_keys keys are real, the rest padding (masked; finite values): the key length
    of a call can then be a bucket that a backend has already planned for; causal aligns to the valid keys.
    Returns [B, Tq, H, D] in q's dtype.
    """
    if q.dim() != 4 or k.dim() != 4 or v.shape != k.shape:
        raise ValueError(f"expected q [B,Tq,H,D] and k, v [B,Tk,Hkv,D]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    B, Tq, H, D = q.shape
    Hkv = k.shape[2]
    if H % Hkv or k.shape[0] != B or k.shape[3] != D:
        raise ValueError(f"incompatible shapes q {tuple(q.shape)} and k {tuple(k.shape)}")
    qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    Tk = k.shape[1]
    if valid_keys is not None and not (Tq if causal else 1) <= valid_keys <= Tk:
        raise ValueError(f"valid_keys {valid_keys} must be in [{Tq if causal else 1}, {Tk}] (the keys given)")
    end = Tk if valid_keys is None else valid_keys
    # a causal chunk over more keys (prefill: Tq = 440 over Tk up to 30 000) keeps its materialised [Tq, Tk] mask:
    # SDPA with the lower-right causal bias instead was 4-13 % slower on an H100 (scripts/bench_prefill.py,
    # 2K-30K keys, bf16, GQA 32/8: 1.317 vs 1.161 ms at 30K), flash forced slower still (1.373)
    mask = None
    if key_lengths is not None or (causal and Tq > 1) or end < Tk:
        pos = torch.arange(Tk, device=q.device)
        # one [Tq, Tk] mask broadcast over the batch unless key lengths differ per row (a batched prefill: one
        # mask for all its rows, not B copies)
        mask = torch.ones(B if key_lengths is not None else 1, 1, Tq, Tk, dtype=torch.bool, device=q.device)
        if key_lengths is not None:
            mask = mask & (pos[None, None, None, :] < key_lengths.to(q.device)[:, None, None, None])
        if end < Tk:
            mask = mask & (pos < end)
        if causal and Tq > 1:
            qpos = torch.arange(Tq, device=q.device) + (end - Tq)
            mask = mask & (pos[None, :] <= qpos[:, None])[None, None]
    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, scale=scale, enable_gqa=H != Hkv)
    return out.transpose(1, 2)
