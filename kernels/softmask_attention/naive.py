"""PyTorch twin of the soft-mask (sparsity-aware training) attention: the spec, fully materialised.

Everything here is plain autograd over dense [B, H, T, T] logits, so it is only meant for tests and
small shapes. The Triton kernel in `triton.py` must match it in values and gradients.

Semantics (docs/softmask.md has the derivation):
- Pages hold S consecutive keys; page p = keys pS..pS+S-1. Stats use complete pages only
  (P = T // S); the trailing partial page is only ever some query's own page, which is never gated.
- Query t (own page o = t // S) may be gated on pages p < o. With n = o visible pages and n <= top_k,
  nothing is gated. Otherwise, per KV head, s_p = max over its G query heads of
  q·mu_p + lam·stopgrad(||q||)·std_p, theta = stopgrad((s_(k) + s_(k+1)) / 2) over visible pages, and
  the logits of every key of page p get log g_p = max(log sigmoid((s_p - theta) / tau), LOG_GATE_FLOOR)
  (soft) or 0 / LOG_GATE_FLOOR for s_p > theta / otherwise (hard, no gradient through selection).
- The own page (and the keys of any page when the query is not gated) use plain causal masking.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Log-gate floor: finite so gradients never see inf - inf; exp(-1e4) underflows to exactly 0 in fp32,
# so the hard mode equals exact top-k page attention.
LOG_GATE_FLOOR = -1.0e4


def check_inputs(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, page_size: int, top_k: int, tau: float
) -> None:
    """Raise ValueError unless q [B, T, H, D], k = v [B, T, Hkv, D] with H % Hkv == 0 and valid options."""
    if q.dim() != 4 or k.dim() != 4 or v.shape != k.shape:
        raise ValueError(
            f"expected q [B,T,H,D] and k, v [B,T,Hkv,D]; "
            f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    B, T, H, D = q.shape
    if k.shape[0] != B or k.shape[1] != T or k.shape[3] != D or k.shape[2] < 1 or H % k.shape[2]:
        raise ValueError(
            f"incompatible shapes q {tuple(q.shape)} and k {tuple(k.shape)} (same B, T, D; H % Hkv == 0)"
        )
    if T < 1 or D < 1:
        raise ValueError(f"empty sequence or head dim: q {tuple(q.shape)}")
    if page_size < 1 or top_k < 1:
        raise ValueError(f"page_size and top_k must be >= 1, got {page_size}, {top_k}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")


def page_stats(k: torch.Tensor, page_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-page key mean and spread over complete pages, differentiable in k.

    k: [B, T, Hkv, D]. Returns mu [B, Hkv, P, D] and std [B, Hkv, P] with P = T // page_size, in float32
    (float64 when k is float64); std_p = sqrt(mean_j ||k_j - mu_p||^2) (the L2 norm of the per-dim std).
    """
    B, T, Hkv, D = k.shape
    P = T // page_size
    dtype = torch.float64 if k.dtype == torch.float64 else torch.float32
    kp = k[:, : P * page_size].to(dtype).reshape(B, P, page_size, Hkv, D)
    mu = kp.mean(dim=2)
    var = (kp - mu[:, :, None]).square().mean(dim=2).sum(dim=-1)
    # sqrt'(0) is inf: route zero-variance pages (identical keys) through a safe branch with zero gradient.
    positive = var > 0
    std = torch.where(
        positive, torch.where(positive, var, torch.ones_like(var)).sqrt(), torch.zeros_like(var)
    )
    return mu.permute(0, 2, 1, 3).contiguous(), std.permute(0, 2, 1).contiguous()


def group_page_scores(q: torch.Tensor, mu: torch.Tensor, std: torch.Tensor, lam: float) -> torch.Tensor:
    """UNIQUE page scores with ||q|| detached, max over each KV head's G query heads.

    q: [B, T, H, D]; mu: [B, Hkv, P, D]; std: [B, Hkv, P]. Returns s [B, Hkv, T, P] in mu's dtype.
    """
    B, T, H, D = q.shape
    Hkv = mu.shape[1]
    qg = q.to(mu.dtype).reshape(B, T, Hkv, H // Hkv, D).permute(0, 2, 1, 3, 4)  # [B, Hkv, T, G, D]
    s = torch.einsum("bjtgd,bjpd->bjtgp", qg, mu)
    s = s + lam * qg.norm(dim=-1).detach()[..., None] * std[:, :, None, None, :]
    return s.amax(dim=3)


def visible_pages(T: int, P: int, page_size: int, top_k: int, device: torch.device) -> torch.Tensor:
    """Bool [T, P]: page p is gated for query t (p before t's own page, and t sees more than top_k pages)."""
    own = torch.arange(T, device=device) // page_size
    pages = torch.arange(P, device=device)
    return (pages[None, :] < own[:, None]) & (own[:, None] > top_k)


def page_threshold(scores: torch.Tensor, visible: torch.Tensor, top_k: int) -> torch.Tensor:
    """theta [B, Hkv, T] = midpoint of the top_k-th and (top_k+1)-th largest visible score (detached).

    scores: [B, Hkv, T, P]; visible: bool [T, P]. Rows with <= top_k visible pages get 0 (never used).
    """
    if scores.shape[-1] <= top_k:
        return scores.new_zeros(scores.shape[:-1])
    ranked = scores.detach().masked_fill(~visible, float("-inf")).sort(dim=-1, descending=True).values
    theta = (ranked[..., top_k - 1] + ranked[..., top_k]) / 2
    return torch.where(torch.isfinite(theta), theta, torch.zeros_like(theta))


def log_gate(
    scores: torch.Tensor, theta: torch.Tensor, visible: torch.Tensor, tau: float, hard: bool
) -> torch.Tensor:
    """Additive log-gate [B, Hkv, T, P]: 0 where not visible, soft or hard gate elsewhere."""
    diff = scores - theta[..., None]
    if hard:
        gate = torch.where(diff > 0, torch.zeros_like(diff), torch.full_like(diff, LOG_GATE_FLOOR))
    else:
        gate = F.logsigmoid(diff / tau).clamp_min(LOG_GATE_FLOOR)
    return torch.where(visible, gate, torch.zeros_like(gate))


def gated_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lg: torch.Tensor, page_size: int, scale: float
) -> torch.Tensor:
    """Causal attention with an additive per-(query, KV head, page) log-gate.

    q: [B, T, H, D]; k, v: [B, T, Hkv, D]; lg: [B, Hkv, T, P] (P complete pages; keys of the trailing
    partial page get 0). Computes in lg's dtype; returns [B, T, H, D] in q's dtype.
    """
    T, H = q.shape[1:3]
    Hkv = k.shape[2]
    dtype = lg.dtype
    bias = lg.repeat_interleave(page_size, dim=-1)
    bias = F.pad(bias, (0, T - bias.shape[-1])).repeat_interleave(H // Hkv, dim=1)  # [B, H, T, T]
    qh, kh, vh = (x.to(dtype).transpose(1, 2) for x in (q, k, v))
    kh, vh = (x.repeat_interleave(H // Hkv, dim=1) for x in (kh, vh))
    logits = scale * qh @ kh.transpose(-1, -2) + bias
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    probs = logits.masked_fill(~causal, float("-inf")).softmax(dim=-1)
    return (probs @ vh).transpose(1, 2).to(q.dtype)


def softmask_attention_naive(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    page_size: int,
    top_k: int,
    tau: float,
    lam: float = 0.5,
    hard: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """Soft-mask causal attention (reference). q [B, T, H, D], k, v [B, T, Hkv, D] -> [B, T, H, D].

    tau is in raw q·k score units (the page score has no 1/sqrt(D)); scale defaults to 1/sqrt(D).
    """
    check_inputs(q, k, v, page_size, top_k, tau)
    T, D = q.shape[1], q.shape[3]
    mu, std = page_stats(k, page_size)
    scores = group_page_scores(q, mu, std, lam)
    visible = visible_pages(T, mu.shape[2], page_size, top_k, q.device)
    theta = page_threshold(scores, visible, top_k)
    lg = log_gate(scores, theta, visible, tau, hard)
    return gated_attention(q, k, v, lg, page_size, 1.0 / math.sqrt(D) if scale is None else scale)
