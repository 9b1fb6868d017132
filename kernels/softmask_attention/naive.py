"""PyTorch twin of the soft-mask (sparsity-aware training) attention: the spec, fully materialised.

Everything here is plain autograd over dense [B, H, TQ, TK] logits, so it is only meant for tests and
small shapes. The Triton kernel in `triton.py` must match it in values and gradients.

Semantics (docs/softmask.md has the derivation):
- Pages hold S consecutive keys; page p = keys pS..pS+S-1; a trailing partial page has stats over the
  keys it holds (as in the decode cache).
- Causal (self-attention, TQ == TK): query t (own page o = t // S) may be gated on the o pages p < o;
  its own page is never gated (plain causal masking inside it), and with o <= top_k nothing is gated.
  Cross-attention (causal=False): every query may be gated on all P pages when P > top_k.
- Gated queries: per KV head, s_p = max over its G query heads of q·mu_p + lam·stopgrad(||q||)·std_p,
  theta = stopgrad((s_(k) + s_(k+1)) / 2) over the gateable pages, and the logits of every key of page p
  get log g_p = max(log sigmoid((s_p - theta) / tau), LOG_GATE_FLOOR) (soft), or 0 for s_p > theta and
  LOG_GATE_FLOOR otherwise (hard: no gradient through the selection).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Log-gate floor: finite so gradients never see inf - inf; exp(-1e4) underflows to exactly 0 in fp32,
# so the hard mode equals exact top-k page attention.
LOG_GATE_FLOOR = -1.0e4


def check_inputs(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, page_size: int, top_k: int, tau: float, causal: bool
) -> None:
    """Raise ValueError unless q [B, TQ, H, D], k = v [B, TK, Hkv, D] with H % Hkv == 0 (TQ == TK when
    causal) and valid options."""
    if q.dim() != 4 or k.dim() != 4 or v.shape != k.shape:
        raise ValueError(
            f"expected q [B,TQ,H,D] and k, v [B,TK,Hkv,D]; "
            f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    B, TQ, H, D = q.shape
    if k.shape[0] != B or k.shape[3] != D or k.shape[2] < 1 or H % k.shape[2]:
        raise ValueError(
            f"incompatible shapes q {tuple(q.shape)} and k {tuple(k.shape)} (same B, D; H % Hkv == 0)"
        )
    if causal and k.shape[1] != TQ:
        raise ValueError(
            f"causal soft-mask attention needs as many keys as queries, got {k.shape[1]} and {TQ}"
        )
    if TQ < 1 or k.shape[1] < 1 or D < 1:
        raise ValueError(f"empty sequence or head dim: q {tuple(q.shape)}, k {tuple(k.shape)}")
    if page_size < 1 or top_k < 1:
        raise ValueError(f"page_size and top_k must be >= 1, got {page_size}, {top_k}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")


def page_stats(k: torch.Tensor, page_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-page key mean and spread, differentiable in k; a trailing partial page uses the keys it holds.

    k: [B, T, Hkv, D]. Returns mu [B, Hkv, P, D] and std [B, Hkv, P] with P = ceil(T / page_size), in float32
    (float64 when k is float64); std_p = sqrt(mean_j ||k_j - mu_p||^2) (the L2 norm of the per-dim std).
    """
    B, T, Hkv, D = k.shape
    P = -(-T // page_size)
    dtype = torch.float64 if k.dtype == torch.float64 else torch.float32
    kp = F.pad(k.to(dtype), (0, 0, 0, 0, 0, P * page_size - T)).reshape(B, P, page_size, Hkv, D)
    held = (torch.arange(P * page_size, device=k.device) < T).to(dtype).reshape(1, P, page_size, 1, 1)
    count = held.sum(dim=2)  # [1, P, 1, 1]
    mu = (kp * held).sum(dim=2) / count
    var = ((kp - mu[:, :, None]).square() * held).sum(dim=2).sum(dim=-1) / count[..., 0]
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


def visible_pages(
    TQ: int, P: int, page_size: int, top_k: int, causal: bool, device: torch.device
) -> torch.Tensor:
    """Bool [TQ, P]: query t is gated on page p. Causal: p is before t's own page and t sees more than
    top_k such pages. Otherwise (cross-attention): every page, when there are more than top_k."""
    if not causal:
        return torch.full((TQ, P), P > top_k, dtype=torch.bool, device=device)
    own = torch.arange(TQ, device=device) // page_size
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
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lg: torch.Tensor,
    page_size: int,
    scale: float,
    causal: bool = True,
) -> torch.Tensor:
    """Attention with an additive per-(query, KV head, page) log-gate.

    q: [B, TQ, H, D]; k, v: [B, TK, Hkv, D]; lg: [B, Hkv, TQ, P], P = ceil(TK / page_size). Computes in lg's
    dtype; returns [B, TQ, H, D] in q's dtype. causal: query t sees keys <= t (TQ == TK).
    """
    TQ, H = q.shape[1:3]
    TK, Hkv = k.shape[1:3]
    dtype = lg.dtype
    bias = lg.repeat_interleave(page_size, dim=-1)[..., :TK].repeat_interleave(
        H // Hkv, dim=1
    )  # [B, H, TQ, TK]
    qh, kh, vh = (x.to(dtype).transpose(1, 2) for x in (q, k, v))
    kh, vh = (x.repeat_interleave(H // Hkv, dim=1) for x in (kh, vh))
    logits = scale * qh @ kh.transpose(-1, -2) + bias
    if causal:
        keep = torch.ones(TQ, TK, dtype=torch.bool, device=q.device).tril()
        logits = logits.masked_fill(~keep, float("-inf"))
    return (logits.softmax(dim=-1) @ vh).transpose(1, 2).to(q.dtype)


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
    causal: bool = True,
    scale: float | None = None,
) -> torch.Tensor:
    """Soft-mask attention (reference). q [B, TQ, H, D], k, v [B, TK, Hkv, D] -> [B, TQ, H, D].

    causal=True: self-attention (TQ == TK, own page never gated); False: cross-attention, every query
    gated over all pages. tau is in raw q·k score units (the page score has no 1/sqrt(D)); scale defaults
    to 1/sqrt(D).
    """
    check_inputs(q, k, v, page_size, top_k, tau, causal)
    mu, std = page_stats(k, page_size)
    scores = group_page_scores(q, mu, std, lam)
    visible = visible_pages(q.shape[1], mu.shape[2], page_size, top_k, causal, q.device)
    theta = page_threshold(scores, visible, top_k)
    lg = log_gate(scores, theta, visible, tau, hard)
    scale = 1.0 / math.sqrt(q.shape[3]) if scale is None else scale
    return gated_attention(q, k, v, lg, page_size, scale, causal)
