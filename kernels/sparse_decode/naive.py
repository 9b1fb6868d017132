"""PyTorch reference (the spec) for paged decode attention over selected or all KV pages.

Shapes (design.md §5): q [B, H, D]; k_pool, v_pool [P, S, Hkv, D]; page_table int32 [B, M] physical page
ids of each sequence in logical order, -1 padded; lengths int32 [B] tokens held; page_ids int32
[B, Hkv, k] PHYSICAL page ids chosen per (sequence, KV head), -1 = skip, any order, no duplicates.

How a physical page learns its valid token count: every page of a sequence is full except its logical
last one, `page_table[b, (lengths[b] - 1) // S]`, which holds `lengths[b] - S * ((lengths[b] - 1) // S)`
tokens. So the kernels read one page-table entry per sequence and mask offsets past that count when a
selected id equals it. The dense path walks the page table in logical order and masks positions
>= lengths[b]. Query head h reads KV head h // G (G = H / Hkv), as in SDPA's enable_gqa.

`sparse_decode_attention_estimate_naive` is the "estimate" variant (SparsityConfig.unselected): the held pages
the selection left out still enter the softmax, each as one term built from its key and value means.
"""

from __future__ import annotations

import torch

from .._checks import CODES, check_same_device, check_tensor

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


def _attend(q, k_pool, v_pool, ids, valid, scale, return_lse: bool = False):
    """ids [B, Hkv, n] physical pages, valid bool [B, Hkv, n, S] -> [B, H, D] in q.dtype (fp32 math); with
    return_lse also the fp32 output before the cast and the natural log-sum-exp [B, H] of the scaled
    logits (-inf for a head with no valid key)."""
    B, H, D = q.shape
    Hkv, S = k_pool.shape[2], k_pool.shape[1]
    safe = ids.clamp(min=0)
    k = _gather_heads(k_pool, safe).reshape(B, Hkv, -1, D).float()
    v = _gather_heads(v_pool, safe).reshape(B, Hkv, -1, D).float()
    qg = q.float().reshape(B, Hkv, H // Hkv, D)
    logits = torch.einsum("bhgd,bhnd->bhgn", qg, k) * scale
    logits = logits.masked_fill(~valid.reshape(B, Hkv, 1, -1), float("-inf"))
    probs = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # a head with no valid key outputs zeros
    out = torch.einsum("bhgn,bhnd->bhgd", probs, v).reshape(B, H, D)
    if return_lse:
        return out, torch.logsumexp(logits, dim=-1).reshape(B, H)
    return out.to(q.dtype)


def _selected_valid(q, k_pool, page_ids, page_table, lengths) -> torch.Tensor:
    """bool [B, Hkv, k, S]: the held token slots of each selected page (the partial-last-page rule)."""
    S = k_pool.shape[1]
    lengths = lengths.long()
    last_slot = ((lengths - 1).clamp(min=0) // S)[:, None]
    last_phys = torch.where(lengths[:, None] > 0, page_table.long().gather(1, last_slot), -2)  # [B, 1]
    last_valid = lengths - S * last_slot[:, 0]  # [B]
    offsets = torch.arange(S, device=q.device)
    is_last = page_ids.long() == last_phys[:, :, None]  # [B, Hkv, k]
    return (page_ids >= 0)[..., None] & (~is_last[..., None] | (offsets < last_valid[:, None, None, None]))


def sparse_decode_attention_naive(q, k_pool, v_pool, page_ids, page_table, lengths, scale=None):
    """Exact softmax over the keys of the selected physical pages only. Returns [B, H, D] in q.dtype."""
    validate_decode_inputs(q, k_pool, v_pool, page_ids, page_table, lengths)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    valid = _selected_valid(q, k_pool, page_ids, page_table, lengths)
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


def validate_page_means(key_mean, value_mean, key_scale, k_pool) -> None:
    """key_mean [P, Hkv, D] in the pool dtype, or codes (fp8 e4m3 or int8) with key_scale fp32 [P, Hkv] (mu =
    code * scale); value_mean [P, Hkv, D] in the pool dtype; ValueError otherwise."""
    P, _, Hkv, D = k_pool.shape
    check_tensor("key_mean", key_mean, (P, Hkv, D), (k_pool.dtype, *CODES))
    check_tensor("value_mean", value_mean, (P, Hkv, D), (k_pool.dtype,))
    if (key_mean.dtype in CODES) != (key_scale is not None):
        raise ValueError("key_scale must be given exactly when key_mean holds codes (fp8 or int8)")
    if key_scale is not None:
        check_tensor("key_scale", key_scale, (P, Hkv), (torch.float32,))
    check_same_device(k_pool=k_pool, key_mean=key_mean, value_mean=value_mean, key_scale=key_scale)


def unselected_estimate_naive(q, key_mean, value_mean, page_ids, page_table, lengths, page_size, key_scale=None,
                              scale=None):
    """The page-mean estimate of attention over the held pages a selection left out.

    Every held page p of the sequence that page_ids[b, h // G] does not list is one softmax term: its n_p
    keys collapsed onto the key mean mu_p (logit log n_p + scale·q·mu_p, i.e. weight n_p·exp(scale·q·mu_p))
    with value the value mean vbar_p. Returns (out fp32 [B, H, D]: the terms' softmax-weighted value means,
    zeros where no page is left out; lse fp32 [B, H]: the natural log-sum-exp of the terms' logits, -inf
    where no page is left out). key_mean / value_mean / key_scale: see `validate_page_means`.
    """
    B, H, D = q.shape
    Hkv, M, S = key_mean.shape[1], page_table.shape[1], page_size
    scale = D ** -0.5 if scale is None else scale
    lengths = lengths.long()
    n_pages = (lengths + S - 1) // S                                                    # [B]
    slot = torch.arange(M, device=q.device)
    held = slot[None] < n_pages[:, None]                                                # [B, M]
    count = torch.where(slot[None] == n_pages[:, None] - 1, lengths[:, None] - S * (n_pages[:, None] - 1), S)
    phys = page_table.long().clamp(min=0)
    mu = key_mean[phys].float()                                                         # [B, M, Hkv, D]
    if key_scale is not None:
        mu = mu * key_scale[phys][..., None]
    vbar = value_mean[phys].float()
    chosen = ((page_table.long()[:, None, :, None] == page_ids.long()[:, :, None, :])
              & (page_ids >= 0)[:, :, None, :]).any(-1)                                 # [B, Hkv, M]
    take = held[:, None] & ~chosen
    qg = q.float().reshape(B, Hkv, H // Hkv, D)
    logits = torch.einsum("bhgd,bmhd->bhgm", qg, mu) * scale + count.clamp(min=1).float().log()[:, None, None]
    logits = logits.masked_fill(~take[:, :, None], float("-inf"))
    probs = torch.softmax(logits, dim=-1).nan_to_num(0.0)
    out = torch.einsum("bhgm,bmhd->bhgd", probs, vbar).reshape(B, H, D)
    return out, torch.logsumexp(logits, dim=-1).reshape(B, H)


def merge_attention(out_a, lse_a, out_b, lse_b):
    """Softmax attention over the union of two disjoint term sets from each set's normalised output
    [B, H, D] and natural log-sum-exp [B, H] (-inf: empty set, its output ignored). Exact when one set is
    empty: out_a * 1 + 0. Returns fp32 [B, H, D] (zeros where both are empty)."""
    lse = torch.logaddexp(lse_a, lse_b)
    w_a = torch.where(lse_a > -torch.inf, torch.exp(lse_a - lse), 0.0)
    w_b = torch.where(lse_b > -torch.inf, torch.exp(lse_b - lse), 0.0)
    return w_a[..., None] * out_a.float() + w_b[..., None] * out_b.float()


def sparse_decode_attention_estimate_naive(q, k_pool, v_pool, page_ids, page_table, lengths, key_mean, value_mean,
                                           key_scale=None, scale=None):
    """Exact softmax over the keys of the selected pages, with every held unselected page entering the same
    softmax as one page-mean term (`unselected_estimate_naive`). With every held page selected it equals
    `sparse_decode_attention_naive` exactly. Returns [B, H, D] in q.dtype."""
    validate_decode_inputs(q, k_pool, v_pool, page_ids, page_table, lengths)
    validate_page_means(key_mean, value_mean, key_scale, k_pool)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    valid = _selected_valid(q, k_pool, page_ids, page_table, lengths)
    out_sel, lse_sel = _attend(q, k_pool, v_pool, page_ids, valid, scale, return_lse=True)
    out_est, lse_est = unselected_estimate_naive(q, key_mean, value_mean, page_ids, page_table, lengths,
                                                 k_pool.shape[1], key_scale=key_scale, scale=scale)
    return merge_attention(out_sel, lse_sel, out_est, lse_est).to(q.dtype)
