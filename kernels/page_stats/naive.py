"""PyTorch twin (the spec) of the fused K/V append + page-statistics update.

A work item is one (sequence, physical page) pair that receives new tokens in this append; the cache
builds the list once per step (`WORK_COLUMNS`). Statistics of a page are taken over every key it holds:
mu = mean_j k_j, std = sqrt(mean_j ||k_j - mu||^2), sigma = per-dim population std, kmin / kmax, and
vmean = mean_j v_j (the value mean, read by the estimate of unselected pages, not by any score), and beside coded
means rmean = mu in the pool dtype (read only to re-rank the candidates the codes select).
The naive twin recomputes them from the pool (it is the definition); the Triton kernel gets the same
numbers incrementally from the fp32 Welford accumulators of each sequence's open page.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .._checks import CODE_DTYPES, CODE_OF, CODES, INT8, check_same_device, check_tensor
from ..select_pages.registry import CODE_MAX

WORK_COLUMNS = ("seq", "page", "tok_start", "n_new", "n_old", "is_last")
SEQ, PAGE, TOK_START, N_NEW, N_OLD, IS_LAST = range(len(WORK_COLUMNS))


class PageStats(NamedTuple):
    """Per-page statistics of one layer. mean [P, Hkv, D] pool dtype, or codes (fp8 e4m3 or int8) with scale
    fp32 [P, Hkv] (mu = mean * scale, scale = max_d |mu_d| / 448 or / 127, 1 for an all-zero mean); std fp32
    [P, Hkv]; sigma (perdim), kmin / kmax (quest): [P, Hkv, D] pool dtype or None when not kept. Fields in the
    order of the score registry's STATISTICS. vmean [P, Hkv, D] pool dtype (also with coded key means) or None:
    the value mean of the page's held tokens. rmean [P, Hkv, D] pool dtype or None, kept only beside coded means:
    the key mean as the pool dtype holds it, for re-ranking the candidates the codes select (`refine_pages`)."""

    mean: torch.Tensor
    std: torch.Tensor
    sigma: torch.Tensor | None = None
    kmin: torch.Tensor | None = None
    kmax: torch.Tensor | None = None
    scale: torch.Tensor | None = None
    vmean: torch.Tensor | None = None
    rmean: torch.Tensor | None = None


class StatAccumulators(NamedTuple):
    """Running fp32 Welford state of each sequence's open page, one layer.
    mean [B, Hkv, D]; m2 [B, Hkv] = sum_j ||k_j - mu||^2; m2d [B, Hkv, D] per dim (perdim only) or None;
    vmean [B, Hkv, D] the open page's value mean (kept exactly when PageStats.vmean is) or None."""

    mean: torch.Tensor
    m2: torch.Tensor
    m2d: torch.Tensor | None = None
    vmean: torch.Tensor | None = None


def validate_append(k, v, work, k_pool, v_pool, stats: PageStats, acc_in: StatAccumulators,
                    acc_out: StatAccumulators) -> None:
    """Shapes, dtypes and devices of an append; raises ValueError with the offending argument's name."""
    check_tensor("k_pool", k_pool, (None, None, None, None))
    P, S, Hkv, D = k_pool.shape
    check_tensor("v_pool", v_pool, (P, S, Hkv, D), (k_pool.dtype,))
    check_tensor("k", k, (None, Hkv, D))
    check_tensor("v", v, tuple(k.shape))
    check_tensor("work", work, (None, len(WORK_COLUMNS)), (torch.int32,))
    check_tensor("stats.mean", stats.mean, (P, Hkv, D), (k_pool.dtype, *CODES))
    check_tensor("stats.std", stats.std, (P, Hkv), (torch.float32,))
    if (stats.mean.dtype in CODES) != (stats.scale is not None):
        raise ValueError("stats.scale must be kept exactly when stats.mean holds codes (fp8 or int8)")
    if stats.scale is not None:
        check_tensor("stats.scale", stats.scale, (P, Hkv), (torch.float32,))
    for name in ("sigma", "kmin", "kmax"):
        if getattr(stats, name) is not None:
            check_tensor(f"stats.{name}", getattr(stats, name), (P, Hkv, D), (k_pool.dtype,))
    if (stats.kmin is None) != (stats.kmax is None):
        raise ValueError("stats.kmin and stats.kmax must be kept together")
    if stats.vmean is not None:
        check_tensor("stats.vmean", stats.vmean, (P, Hkv, D), (k_pool.dtype,))
    if stats.rmean is not None:
        if stats.scale is None:
            raise ValueError("stats.rmean (pool-dtype key means for re-ranking) is kept only beside coded means")
        check_tensor("stats.rmean", stats.rmean, (P, Hkv, D), (k_pool.dtype,))
    for label, acc in (("acc_in", acc_in), ("acc_out", acc_out)):
        check_tensor(f"{label}.mean", acc.mean, (None, Hkv, D), (torch.float32,))
        B = acc.mean.shape[0]
        check_tensor(f"{label}.m2", acc.m2, (B, Hkv), (torch.float32,))
        if (acc.m2d is None) != (stats.sigma is None):
            raise ValueError(f"{label}.m2d must be kept exactly when stats.sigma is")
        if acc.m2d is not None:
            check_tensor(f"{label}.m2d", acc.m2d, (B, Hkv, D), (torch.float32,))
        if (acc.vmean is None) != (stats.vmean is None):
            raise ValueError(f"{label}.vmean must be kept exactly when stats.vmean is")
        if acc.vmean is not None:
            check_tensor(f"{label}.vmean", acc.vmean, (B, Hkv, D), (torch.float32,))
    check_same_device(k=k, v=v, work=work, k_pool=k_pool, v_pool=v_pool, mean=stats.mean, std=stats.std,
                      acc_in=acc_in.mean, acc_out=acc_out.mean)


def quantise_mean(mu: torch.Tensor, code: str = "fp8") -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 means [..., D] -> (codes [..., D], fp32 scale [...]) as the cache stores them for stats_dtype
    `code`: scale = max_d |mu_d| / CODE_MAX[code] (1 where the mean is all zero), codes = mu / scale rounded to
    the nearest code (ties to even). "fp8": e4m3 codes (3 mantissa bits: a step of about |mu_d| / 16 at the
    largest dimensions, the ones that dominate q·mu); "int8": integers in [-127, 127] (a uniform step of
    max|mu| / 127)."""
    amax = mu.abs().amax(-1)
    scale = torch.where(amax > 0, amax / CODE_MAX[code], torch.ones_like(amax))
    y = mu / scale[..., None]
    if CODE_DTYPES[code] == INT8:  # a float -> int cast truncates: round first
        y = y.round().clamp(-CODE_MAX[code], CODE_MAX[code])
    return y.to(CODE_DTYPES[code]), scale


def append_kv_naive(k, v, work, k_pool, v_pool, stats: PageStats, acc_in: StatAccumulators,
                    acc_out: StatAccumulators, *, validate: bool = True) -> None:
    """Write packed new tokens into the pools and refresh the touched pages' statistics, in place.

    k, v: [N, Hkv, D] packed new tokens; work: int32 [W, 6] (`WORK_COLUMNS`); k_pool, v_pool:
    [P, S, Hkv, D]; stats: this layer's PageStats; acc_out receives the Welford state of each work
    item with is_last set (the sequence's open page). acc_in is not read: the spec re-reads the pages.
    validate=False skips the argument checks (for callers that built the arguments themselves).
    """
    if validate:
        validate_append(k, v, work, k_pool, v_pool, stats, acc_in, acc_out)
    if work.shape[0] == 0:
        return
    w = work.long()
    item = torch.repeat_interleave(torch.arange(w.shape[0], device=w.device), w[:, N_NEW])
    first = torch.cumsum(w[:, N_NEW], 0) - w[:, N_NEW]
    slot = w[item, N_OLD] + torch.arange(item.numel(), device=w.device) - first[item]
    tok = w[item, TOK_START] + torch.arange(item.numel(), device=w.device) - first[item]
    k_pool[w[item, PAGE], slot] = k[tok].to(k_pool.dtype)
    v_pool[w[item, PAGE], slot] = v[tok].to(v_pool.dtype)

    keys = k_pool[w[:, PAGE]].float()                                   # [W, S, Hkv, D]
    count = (w[:, N_OLD] + w[:, N_NEW]).float()                         # [W]
    held = (torch.arange(k_pool.shape[1], device=w.device)[None] < count[:, None])[..., None, None]
    mu = (keys * held).sum(1) / count[:, None, None]                    # [W, Hkv, D]
    m2d = (((keys - mu[:, None]) * held) ** 2).sum(1)                   # [W, Hkv, D]
    pages = w[:, PAGE]
    if stats.scale is not None:
        mu_q, scale = quantise_mean(mu, CODE_OF[stats.mean.dtype])
        stats.mean[pages], stats.scale[pages] = mu_q, scale
        if stats.rmean is not None:
            stats.rmean[pages] = mu.to(stats.rmean.dtype)
    else:
        stats.mean[pages] = mu.to(stats.mean.dtype)
    stats.std[pages] = (m2d.sum(-1) / count[:, None]).sqrt()
    if stats.sigma is not None:
        stats.sigma[pages] = (m2d / count[:, None, None]).sqrt().to(stats.sigma.dtype)
    if stats.kmin is not None:
        stats.kmin[pages] = torch.where(held, keys, torch.inf).amin(1).to(stats.kmin.dtype)
        stats.kmax[pages] = torch.where(held, keys, -torch.inf).amax(1).to(stats.kmax.dtype)
    if stats.vmean is not None:
        vbar = (v_pool[pages].float() * held).sum(1) / count[:, None, None]   # [W, Hkv, D]
        stats.vmean[pages] = vbar.to(stats.vmean.dtype)
    last = w[:, IS_LAST] != 0
    seqs = w[last, SEQ]
    acc_out.mean[seqs] = mu[last]
    acc_out.m2[seqs] = m2d[last].sum(-1)
    if acc_out.m2d is not None:
        acc_out.m2d[seqs] = m2d[last]
    if acc_out.vmean is not None:
        acc_out.vmean[seqs] = vbar[last]
