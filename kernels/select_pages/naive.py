"""PyTorch twin (the spec) of page scoring and top-k page selection for decode.

Scores per (sequence b, KV head h, logical page p), with q_g the G query heads of KV head h:
  unique: max_g q_g·mu_p + lam·||q_g||·std_p        mean: lam = 0
  perdim: max_g q_g·mu_p + lam·sum_d |q_gd|·sigma_pd
  quest:  max_g sum_d max(q_gd·kmin_pd, q_gd·kmax_pd)
  oracle: max_g softmax mass of page p for q_g (needs the key pool; reference only)
Selection: the k best pages by score (forced pages score +inf; ties go to the lower logical page),
returned as PHYSICAL page ids in ascending logical order, -1 padded to k. A sequence holding <= k pages
selects all of them. Sequence b holds min(ceil(lengths[b] / S), max_pages) pages; their page-table
entries must be valid physical ids (entries past them are ignored).
Re-ranking (`refine_pages_naive`): from a selection of C > k candidates (made with coded means), the k best by
the same score over the pool-dtype means (statistic "rmean"), same output contract.
"""

from __future__ import annotations

import math

import torch

from .._checks import CODES, FLOAT_DTYPES, check_same_device, check_tensor
from .registry import REFINABLE, SCORES, get_score, scores_for

MODES = scores_for("select")  # the modes the Triton kernel runs; "oracle" is reference-only


def validate_select(q, page_table, lengths, mean, std, k, page_size, mode, sigma=None, kmin=None, kmax=None,
                    scale=None):
    """Check shapes/dtypes/devices of a selection call; returns (B, H, D, Hkv, G). Raises ValueError."""
    check_tensor("q", q, (None, None, None))
    B, H, D = q.shape
    check_tensor("page_table", page_table, (B, None), (torch.int32,))
    check_tensor("lengths", lengths, (B,), (torch.int32,))
    check_tensor("mean", mean, (None, None, D), FLOAT_DTYPES + CODES)
    P, Hkv, _ = mean.shape
    check_tensor("std", std, (P, Hkv), (torch.float32,))
    if (mean.dtype in CODES) != (scale is not None):
        raise ValueError("coded (fp8 e4m3 or int8) means need their scale [P, Hkv] fp32, and only they take one; "
                         f"got mean {mean.dtype} and scale {'None' if scale is None else 'given'}")
    if scale is not None:
        check_tensor("scale", scale, (P, Hkv), (torch.float32,))
    if H % Hkv:
        raise ValueError(f"query heads ({H}) must be a multiple of KV heads ({Hkv})")
    score = get_score(mode)
    if not isinstance(k, int) or k < 1 or not isinstance(page_size, int) or page_size < 1:
        raise ValueError(f"k and page_size must be ints >= 1, got k={k!r}, page_size={page_size!r}")
    for name, t in (("sigma", sigma), ("kmin", kmin), ("kmax", kmax)):
        if name in score.stats and t is None:
            raise ValueError(f"mode {mode!r} needs {name}")
        if t is not None:
            check_tensor(name, t, (P, Hkv, D), FLOAT_DTYPES)
    check_same_device(q=q, page_table=page_table, lengths=lengths, mean=mean, std=std,
                      sigma=sigma, kmin=kmin, kmax=kmax, scale=scale)
    return B, H, D, Hkv, H // Hkv


def held_pages(lengths: torch.Tensor, page_size: int, max_pages: int) -> torch.Tensor:
    """bool [B, max_pages]: logical page p is held by sequence b (p < ceil(length / S))."""
    n_pages = (lengths.long() + page_size - 1) // page_size
    return torch.arange(max_pages, device=lengths.device)[None] < n_pages[:, None]


def page_scores_naive(q, page_table, lengths, mean, std, *, page_size, mode="unique", lam=0.5,
                      sigma=None, kmin=None, kmax=None, scale=None) -> torch.Tensor:
    """fp32 [B, Hkv, max_pages] page scores (group max over the G query heads), -inf where not held.

    q [B, H, D]; page_table int32 [B, max_pages]; lengths int32 [B]; mean [P, Hkv, D]; std fp32 [P, Hkv];
    sigma / kmin / kmax [P, Hkv, D] for perdim / quest; scale fp32 [P, Hkv] with fp8 means (mu = mean * scale).
    """
    B, H, D, Hkv, G = validate_select(q, page_table, lengths, mean, std, 1, page_size, mode,
                                      sigma, kmin, kmax, scale)
    score = SCORES[mode]
    if score.needs_keys:
        raise ValueError(f"mode {mode!r} scores from the key pool: use oracle_scores_naive")
    ids = page_table.clamp(min=0).long()                                  # [B, M]
    qg = q.float().view(B, Hkv, G, D)
    mu = mean if scale is None else mean.float() * scale[..., None]
    tensors = {"mean": mu, "std": std, "sigma": sigma, "kmin": kmin, "kmax": kmax}
    gather = lambda name: tensors[name][ids].float()                      # noqa: E731  [B, M, Hkv(, D)]
    s = score.reference_fn(qg, gather, qg.norm(dim=-1), lam).amax(2)
    return s.masked_fill(~held_pages(lengths, page_size, ids.shape[1])[:, None], -math.inf)


# Reference scores (registry.Score.reference): qg fp32 [B, Hkv, G, D]; gather(stat) fp32 [B, M, Hkv(, D)];
# qnorm [B, Hkv, G]; returns [B, Hkv, G, M] before the group max.

def score_mean(qg, gather, qnorm, lam):
    """q·mu"""
    return torch.einsum("bhgd,bmhd->bhgm", qg, gather("mean"))


def score_unique(qg, gather, qnorm, lam):
    """q·mu + lam·||q||·std"""
    return score_mean(qg, gather, qnorm, lam) + lam * qnorm[..., None] * gather("std").permute(0, 2, 1)[:, :, None]


def score_perdim(qg, gather, qnorm, lam):
    """q·mu + lam·sum_d |q_d|·sigma_d"""
    return score_mean(qg, gather, qnorm, lam) + lam * torch.einsum("bhgd,bmhd->bhgm", qg.abs(), gather("sigma"))


def score_quest(qg, gather, qnorm, lam):
    """sum_d max(q_d·kmin_d, q_d·kmax_d)"""
    lo, hi = gather("kmin"), gather("kmax")
    prod = torch.maximum(qg[:, :, :, None] * lo.permute(0, 2, 1, 3)[:, :, None],
                         qg[:, :, :, None] * hi.permute(0, 2, 1, 3)[:, :, None])
    return prod.sum(-1)


def oracle_scores_naive(q, page_table, lengths, k_pool, *, scale=None) -> torch.Tensor:
    """fp32 [B, Hkv, max_pages]: softmax attention mass of each page (group max), -inf where not held.

    q [B, H, D]; k_pool [P, S, Hkv, D]; scale defaults to 1/sqrt(D).
    """
    check_tensor("k_pool", k_pool, (None, None, None, q.shape[-1]))
    B, H, D = q.shape
    _, S, Hkv, _ = k_pool.shape
    ids = page_table.clamp(min=0).long()
    M = ids.shape[1]
    keys = k_pool[ids].float()                                            # [B, M, S, Hkv, D]
    logits = torch.einsum("bhgd,bmshd->bhgms", q.float().view(B, Hkv, H // Hkv, D), keys)
    logits = logits * (scale if scale is not None else D ** -0.5)
    tok = torch.arange(M * S, device=q.device).view(M, S)
    logits = logits.masked_fill(tok[None, None, None] >= lengths.long()[:, None, None, None, None], -math.inf)
    mass = torch.softmax(logits.flatten(-2), -1).view_as(logits).sum(-1).amax(2)
    return mass.masked_fill(~held_pages(lengths, S, M)[:, None], -math.inf)


def topk_pages_naive(scores, page_table, lengths, *, k, page_size, keep_first=False, keep_last=False):
    """int32 [B, Hkv, k] physical ids of the k best held pages per (b, h), ascending logical order,
    -1 padded. scores fp32 [B, Hkv, max_pages] (-inf where not held)."""
    B, Hkv, M = scores.shape
    held = held_pages(lengths, page_size, M)[:, None].expand(B, Hkv, M)
    s = scores.clone()
    n_pages = (lengths.long() + page_size - 1) // page_size
    if keep_first:
        s[..., 0] = torch.where(held[..., 0], math.inf, s[..., 0])
    if keep_last:
        last = (n_pages - 1).clamp(min=0)[:, None, None].expand(B, Hkv, 1)
        s.scatter_(2, last, torch.where(n_pages[:, None, None] > 0, math.inf, s.gather(2, last)))
    order = torch.sort(s, dim=-1, descending=True, stable=True).indices[..., :k]   # ties: lower page first
    chosen = torch.zeros_like(held).scatter_(2, order, True) & held
    logical = torch.where(chosen, torch.arange(M, device=s.device), M).sort(-1).values[..., :k]
    phys = page_table.long()[:, None].expand(B, Hkv, M).gather(2, logical.clamp(max=M - 1))
    out = torch.where(logical < M, phys, -1).to(torch.int32)
    if out.shape[-1] < k:
        out = torch.nn.functional.pad(out, (0, k - out.shape[-1]), value=-1)
    return out


def select_pages_naive(q, page_table, lengths, mean, std, *, k, page_size, mode="unique", lam=0.5,
                       keep_first=False, keep_last=False, sigma=None, kmin=None, kmax=None, scale=None,
                       k_pool=None):
    """Score (`page_scores_naive`, or `oracle_scores_naive` for mode "oracle" with k_pool) then select the
    top-k pages per (sequence, KV head): int32 [B, Hkv, k] physical ids, -1 padded."""
    validate_select(q, page_table, lengths, mean, std, k, page_size, mode, sigma, kmin, kmax, scale)
    if SCORES[mode].needs_keys:
        if k_pool is None:
            raise ValueError(f"mode {mode!r} needs k_pool")
        scores = oracle_scores_naive(q, page_table, lengths, k_pool)
    else:
        scores = page_scores_naive(q, page_table, lengths, mean, std, page_size=page_size, mode=mode, lam=lam,
                                   sigma=sigma, kmin=kmin, kmax=kmax, scale=scale)
    return topk_pages_naive(scores, page_table, lengths, k=k, page_size=page_size,
                            keep_first=keep_first, keep_last=keep_last)


def validate_refine(q, candidates, page_table, lengths, mean, std, k, page_size, mode, sigma=None):
    """Check a re-ranking call; returns (B, H, D, Hkv, G, C). Raises ValueError."""
    if mode not in REFINABLE:
        raise ValueError(f"re-ranking takes the scores that read key means ({', '.join(REFINABLE)}), "
                         f"not {mode!r}")
    if isinstance(mean, torch.Tensor) and mean.dtype in CODES:
        raise ValueError(f"re-ranking reads the pool-dtype key means (rmean), not codes ({mean.dtype})")
    B, H, D, Hkv, G = validate_select(q, page_table, lengths, mean, std, k, page_size, mode, sigma=sigma)
    check_tensor("candidates", candidates, (B, Hkv, None), (torch.int32,))
    C = candidates.shape[-1]
    if C < k:
        raise ValueError(f"re-ranking keeps k of the candidates: need at least k = {k} of them, got {C}")
    check_same_device(q=q, candidates=candidates)
    return B, H, D, Hkv, G, C


def refine_pages_naive(q, candidates, page_table, lengths, mean, std, *, k, page_size, mode="unique", lam=0.5,
                       keep_first=False, keep_last=False, sigma=None):
    """The k best of `candidates` by `mode`'s score over `mean` in a float dtype: int32 [B, Hkv, k] physical
    ids in ascending logical order, -1 padded (the contract of `select_pages_naive`).

    candidates: int32 [B, Hkv, C] physical ids in ascending logical order, -1 padded (a selection of C >= k
    pages, e.g. `select_pages` over one-byte codes with k + refine); mean [P, Hkv, D] the pool-dtype key means
    (the cache's rmean); std, sigma as for the selection. Ties go to the earlier candidate (the lower logical
    page); keep_first / keep_last: the sink and the last held page stay selected when they are candidates
    (a selection with the same flags made them so). Where the pool-dtype top-k all sit among the candidates,
    the result is the pool-dtype selection itself."""
    B, H, D, Hkv, G, C = validate_refine(q, candidates, page_table, lengths, mean, std, k, page_size, mode, sigma)
    valid = candidates >= 0                                                # [B, Hkv, C]
    ids = candidates.clamp(min=0).long().permute(0, 2, 1)                  # [B, C, Hkv]
    heads = torch.arange(Hkv, device=q.device)
    tensors = {"mean": mean, "std": std, "sigma": sigma}
    gather = lambda name: tensors[name][ids, heads].float()              # noqa: E731  [B, C, Hkv(, D)]
    qg = q.float().view(B, Hkv, G, D)
    s = SCORES[mode].reference_fn(qg, gather, qg.norm(dim=-1), lam).amax(2)  # [B, Hkv, C]
    n_pages = ((lengths.long() + page_size - 1) // page_size).clamp(max=page_table.shape[1])
    table = page_table.long()
    forced = torch.zeros_like(valid)
    if keep_first:
        forced |= (candidates == table[:, :1, None]) & (n_pages > 0)[:, None, None]
    if keep_last:
        last = table.gather(1, (n_pages - 1).clamp(min=0)[:, None])        # [B, 1]
        forced |= (candidates == last[..., None]) & (n_pages > 0)[:, None, None]
    s = torch.where(forced, math.inf, s).masked_fill(~valid, -math.inf)
    order = torch.sort(s, dim=-1, descending=True, stable=True).indices[..., :k]
    keep = torch.zeros_like(valid).scatter_(2, order, True) & valid
    slot = torch.where(keep, torch.arange(C, device=q.device), C).sort(-1).values[..., :k]
    out = torch.where(slot < C, candidates.gather(2, slot.clamp(max=C - 1)), -1)
    return out.to(torch.int32)


SINK_PAGES = 1  # the window mode's sink: the first logical page (the prompt's head)


def validate_window(page_table, lengths, k, page_size, num_kv_heads):
    """Check a window selection call. Raises ValueError."""
    check_tensor("page_table", page_table, (None, None), (torch.int32,))
    check_tensor("lengths", lengths, (page_table.shape[0],), (torch.int32, torch.int64))
    check_same_device(page_table=page_table, lengths=lengths)
    for name, v in (("k", k), ("page_size", page_size), ("num_kv_heads", num_kv_heads)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


def window_pages_naive(page_table, lengths, *, k, page_size, num_kv_heads):
    """The `window` mode's selection (the sliding-window baseline: no scoring): int32 [B, Hkv, k] physical page
    ids in ascending logical order, -1 padded: logical pages [0, SINK_PAGES) and the last k - SINK_PAGES held
    pages (every held page when a sequence holds <= k), the same for every KV head.

    page_table int32 [B, max_pages] (-1 padded); lengths int [B] tokens held. Device-only (no host sync)."""
    validate_window(page_table, lengths, k, page_size, num_kv_heads)
    n_pages = (lengths.long() + page_size - 1) // page_size                  # [B]
    j = torch.arange(k, device=page_table.device)                            # [k]
    sink = min(SINK_PAGES, k - 1) if k > 1 else 0
    recent = n_pages[:, None] - k + j[None, :]                               # [B, k]
    logical = torch.where(n_pages[:, None] <= k, j[None, :], torch.where(j[None, :] < sink, j[None, :], recent))
    held = logical < n_pages[:, None]
    phys = page_table.long().gather(1, logical.clamp(0, page_table.shape[1] - 1))
    out = torch.where(held, phys, -1).to(torch.int32)
    return out[:, None, :].expand(-1, num_kv_heads, -1).contiguous()
