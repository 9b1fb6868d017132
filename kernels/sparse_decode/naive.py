"""PyTorch reference (the spec) for paged decode attention over selected or all KV pages.

Shapes (design.md §5): q [B, H, D]; k_pool, v_pool [P, S, Hkv, D]; page_table int32 [B, M] physical page
ids of each sequence in logical order, -1 padded; lengths int32 [B] tokens held; page_ids int32
[B, Hkv, k] PHYSICAL page ids chosen per (sequence, KV head), -1 = skip, any order, no duplicates.

How a physical page learns its valid token count: every page of a sequence is full except its logical
last one, `page_table[b, (lengths[b] - 1) // S]`, which holds `lengths[b] - S * ((lengths[b] - 1) // S)`
tokens. So the kernels read one page-table entry per sequence and mask offsets past that count when a
selected id equals it. The dense path walks the page table in logical order and masks positions
>= lengths[b]. Query head h reads KV head h // G (G = H / Hkv), as in SDPA's enable_gqa.
"""

from __future__ import annotations

import torch

_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def validate_decode_inputs(q, k_pool, v_pool, page_ids, page_table, lengths, dtypes=_DTYPES) -> None:
    """Raise ValueError on shapes, dtypes or devices the decode kernels do not accept."""
    if q.dim() != 3 or k_pool.dim() != 4 or v_pool.shape != k_pool.shape:
        raise ValueError(
            f"expected q [B,H,D] and k_pool, v_pool [P,S,Hkv,D]; got {tuple(q.shape)}, "
            f"{tuple(k_pool.shape)}, {tuple(v_pool.shape)}"
        )
    B, H, D = q.shape
    Hkv = k_pool.shape[2]
    if k_pool.shape[3] != D or H % Hkv:
        raise ValueError(f"q {tuple(q.shape)} does not fit pools {tuple(k_pool.shape)} (need same D, H % Hkv == 0)")
    if q.dtype not in dtypes or k_pool.dtype != q.dtype or v_pool.dtype != q.dtype:
        raise ValueError(
            f"q, k_pool, v_pool must share one dtype of {dtypes}; got {q.dtype}, {k_pool.dtype}, {v_pool.dtype}"
        )
    if page_table.dim() != 2 or page_table.shape[0] != B or page_table.shape[1] < 1:
        raise ValueError(f"page_table must be [B={B}, max_pages>=1]; got {tuple(page_table.shape)}")
    if lengths.shape != (B,):
        raise ValueError(f"lengths must be [B={B}]; got {tuple(lengths.shape)}")
    if page_ids is not None and (page_ids.dim() != 3 or tuple(page_ids.shape[:2]) != (B, Hkv)):
        raise ValueError(f"page_ids must be [B={B}, Hkv={Hkv}, k]; got {tuple(page_ids.shape)}")
    for name, t in (("page_table", page_table), ("lengths", lengths), ("page_ids", page_ids)):
        if t is not None and t.dtype != torch.int32:
            raise ValueError(f"{name} must be int32, got {t.dtype}")
    devices = {t.device for t in (q, k_pool, v_pool, page_table, lengths, page_ids) if t is not None}
    if len(devices) != 1:
        raise ValueError(f"all inputs must be on one device, got {sorted(map(str, devices))}")


def _gather_heads(pool: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """pool [P, S, Hkv, D], ids int [B, Hkv, n] (>= 0) -> [B, Hkv, n, S, D]."""
    heads = torch.arange(pool.shape[2], device=pool.device)[None, :, None]
    return pool.permute(2, 0, 1, 3)[heads, ids.long()]


def _attend(q, k_pool, v_pool, ids, valid, scale) -> torch.Tensor:
    """ids [B, Hkv, n] physical pages, valid bool [B, Hkv, n, S] -> [B, H, D] in q.dtype (fp32 math)."""
    B, H, D = q.shape
    Hkv, S = k_pool.shape[2], k_pool.shape[1]
    safe = ids.clamp(min=0)
    k = _gather_heads(k_pool, safe).reshape(B, Hkv, -1, D).float()
    v = _gather_heads(v_pool, safe).reshape(B, Hkv, -1, D).float()
    qg = q.float().reshape(B, Hkv, H // Hkv, D)
    logits = torch.einsum("bhgd,bhnd->bhgn", qg, k) * scale
    logits = logits.masked_fill(~valid.reshape(B, Hkv, 1, -1), float("-inf"))
    probs = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # a head with no valid key outputs zeros
    return torch.einsum("bhgn,bhnd->bhgd", probs, v).reshape(B, H, D).to(q.dtype)


def sparse_decode_attention_naive(q, k_pool, v_pool, page_ids, page_table, lengths, scale=None):
    """Exact softmax over the keys of the selected physical pages only. Returns [B, H, D] in q.dtype."""
    validate_decode_inputs(q, k_pool, v_pool, page_ids, page_table, lengths)
    S = k_pool.shape[1]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    lengths = lengths.long()
    last_slot = ((lengths - 1).clamp(min=0) // S)[:, None]
    last_phys = torch.where(lengths[:, None] > 0, page_table.long().gather(1, last_slot), -2)  # [B, 1]
    last_valid = lengths - S * last_slot[:, 0]  # [B]
    offsets = torch.arange(S, device=q.device)
    is_last = page_ids.long() == last_phys[:, :, None]  # [B, Hkv, k]
    valid = (page_ids >= 0)[..., None] & (~is_last[..., None] | (offsets < last_valid[:, None, None, None]))
    return _attend(q, k_pool, v_pool, page_ids, valid, scale)


def dense_paged_decode_attention_naive(q, k_pool, v_pool, page_table, lengths, scale=None):
    """Exact softmax over every token of each sequence's page table. Returns [B, H, D] in q.dtype."""
    validate_decode_inputs(q, k_pool, v_pool, None, page_table, lengths)
    B, M = page_table.shape
    Hkv, S = k_pool.shape[2], k_pool.shape[1]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    ids = page_table[:, None, :].expand(B, Hkv, M)
    pos = torch.arange(M * S, device=q.device).reshape(1, 1, M, S)
    valid = (ids >= 0)[..., None] & (pos < lengths.long()[:, None, None, None])
    return _attend(q, k_pool, v_pool, ids, valid, scale)
