"""Dense attention over contiguous tensors (the reference every sparse path must equal at full budget)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right


def dense_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    key_lengths: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Exact softmax attention.

    q: [B, Tq, H, D]; k, v: [B, Tk, Hkv, D] with H % Hkv == 0 (GQA groups share a KV head);
    key_lengths: optional int [B], keys at positions >= length are masked;
    causal: query i (aligned to the end of the keys) sees keys <= Tk - Tq + i.
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
    if key_lengths is None and causal and 1 < Tq <= Tk:
        # no [Tq, Tk] mask in memory: the lower-right causal bias lets SDPA use flash attention, which masks by
        # position (a prefill chunk over a long cached row: Tq = 440, Tk = 30 000). With a mask and GQA, CUDA's SDPA
        # runs the math kernel (GQA: flash and math only; flash takes no mask), writing the [H, Tq, Tk] scores.
        bias = causal_lower_right(Tq, Tk) if Tq < Tk else None
        out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=bias, is_causal=bias is None, scale=scale,
                                             enable_gqa=H != Hkv)
        return out.transpose(1, 2)
    mask = None
    if key_lengths is not None or (causal and Tq > 1):
        pos = torch.arange(Tk, device=q.device)
        mask = torch.ones(B, 1, Tq, Tk, dtype=torch.bool, device=q.device)
        if key_lengths is not None:
            mask = mask & (pos[None, None, None, :] < key_lengths.to(q.device)[:, None, None, None])
        if causal and Tq > 1:
            qpos = torch.arange(Tq, device=q.device) + (Tk - Tq)
            mask = mask & (pos[None, :] <= qpos[:, None])[None, None]
    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, scale=scale, enable_gqa=H != Hkv)
    return out.transpose(1, 2)
