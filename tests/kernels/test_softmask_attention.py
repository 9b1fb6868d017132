"""Soft-mask training attention: Triton (interpreter on CPU) vs its naive autograd twin, values and grads."""

from __future__ import annotations

import pytest
import torch
from unique_asr.kernels.softmask_attention import (
    LOG_GATE_FLOOR,
    page_thresholds,
    softmask_attention,
    softmask_attention_naive,
)
from unique_asr.kernels.softmask_attention.naive import (
    gated_attention,
    group_page_scores,
    log_gate,
    page_stats,
    page_threshold,
    visible_pages,
)

from unique_asr.attention.dense import dense_attention

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"


def make_inputs(B, T, H, Hkv, D, dtype=torch.float32, device=DEVICE, TK=None):
    """Fresh random q [B, T, H, D], k, v [B, TK (= T), Hkv, D] (leaf tensors needing grad) and dout."""
    shapes = ((B, T, H, D), (B, TK or T, Hkv, D), (B, TK or T, Hkv, D))
    q, k, v = (torch.randn(*shape, device=device, dtype=dtype).requires_grad_() for shape in shapes)
    return q, k, v, torch.randn(B, T, H, D, device=device, dtype=dtype)


def run(fn, q, k, v, dout, **kw):
    """Output and (dq, dk, dv) of fn under the upstream gradient dout."""
    out = fn(q, k, v, **kw)
    return out, torch.autograd.grad(out, (q, k, v), dout)


def tiles(block_m, block_p) -> dict:
    """Explicit small tiles (many tiles on small inputs) under the interpreter; on GPU the defaults, since
    tl.dot needs every dimension >= 16 there (smaller tiles are refused: test_small_tiles_refused_on_gpu)."""
    return {} if CUDA else {"block_m": block_m, "block_p": block_p}


def assert_close(a, b, atol=2e-5, rtol=1e-4):
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


def group_max_ties(q, k, S, top_k, causal, lam=0.5, rel=1e-6):
    """Bool [B, TQ, Hkv]: some gated page's two best group-head scores lie within `rel` of each other
    (relative to the score scale), so which head attains the max is decided by rounding."""
    B, T, H, _ = q.shape
    mu, std = page_stats(k.double(), S)
    Hkv = mu.shape[1]
    qg = q.double().reshape(B, T, Hkv, H // Hkv, -1).permute(0, 2, 1, 3, 4)  # [B, Hkv, T, G, D]
    s = torch.einsum("bjtgd,bjpd->bjtgp", qg, mu) + lam * qg.norm(dim=-1)[..., None] * std[:, :, None, None, :]
    if H // Hkv == 1:
        return torch.zeros(B, T, Hkv, dtype=torch.bool, device=q.device)
    top2 = s.topk(2, dim=3).values  # [B, Hkv, T, 2, P]
    near = (top2[:, :, :, 0] - top2[:, :, :, 1]) <= rel * s.abs().amax()
    visible = visible_pages(T, mu.shape[2], S, top_k, causal, q.device)
    return (near & visible).any(dim=-1).permute(0, 2, 1)


def boundary_gap(q, k, S, top_k, causal=True, lam=0.5):
    """Smallest distance of any gated page score to its theta (hard selection is ill-posed near ties)."""
    mu, std = page_stats(k.detach(), S)
    scores = group_page_scores(q.detach(), mu, std, lam)
    visible = visible_pages(q.shape[1], mu.shape[2], S, top_k, causal, q.device)
    theta = page_threshold(scores, visible, top_k)
    gaps = (scores - theta[..., None]).abs().masked_fill(~visible, float("inf"))
    return gaps.min().item()


@pytest.mark.parametrize(
    "B, TQ, TK, H, Hkv, D, S, top_k, causal, blocks",
    [
        (2, 50, 50, 2, 2, 16, 4, 3, True, (16, 4)),  # G = 1, batch 2, partial last page, many tiles
        (1, 50, 50, 8, 2, 16, 4, 3, True, (8, 4)),  # G = 4 (group max, group-summed gate gradient)
        (1, 45, 45, 3, 1, 12, 8, 2, True, (None, None)),  # G = 3 padded to 4, D = 12, default tiles
        (1, 20, 45, 8, 2, 16, 4, 3, False, (8, 2)),  # cross-attention, partial last page is gated
    ],
)
def test_soft_gate_matches_naive(B, TQ, TK, H, Hkv, D, S, top_k, causal, blocks):
    q, k, v, dout = make_inputs(B, TQ, H, Hkv, D, TK=TK)
    opts = dict(page_size=S, top_k=top_k, tau=0.5, causal=causal)
    out, grads = run(softmask_attention, q, k, v, dout, **tiles(*blocks), **opts)
    ref, ref_grads = run(softmask_attention_naive, q, k, v, dout, **opts)
    assert_close(out, ref)
    for got, want in zip(grads, ref_grads):
        assert_close(got, want)
    # The gate path must carry real gradient, else matching the twin would not test it.
    mu, std = page_stats(k, S)
    scores = group_page_scores(q, mu, std, 0.5)
    visible = visible_pages(TQ, mu.shape[2], S, top_k, causal, q.device)
    lg = log_gate(scores, page_threshold(scores, visible, top_k), visible, 0.5, False).detach()
    _, attention_only = run(gated_attention, q, k, v, dout, lg=lg, page_size=S, scale=D**-0.5, causal=causal)
    assert (ref_grads[0] - attention_only[0]).abs().max() > 1e-2
    assert (ref_grads[1] - attention_only[1]).abs().max() > 1e-2


@pytest.mark.parametrize(
    "TQ, TK, H, Hkv, D, S, top_k, causal, blocks",
    [
        (50, 50, 8, 2, 16, 4, 3, True, (16, 4)),  # several query tiles and page blocks
        (45, 45, 3, 1, 12, 8, 2, True, (None, None)),
        (20, 45, 8, 2, 16, 4, 3, False, (None, None)),  # partial last page competes
    ],
)
def test_threshold_kernel_matches_sorted_scores(TQ, TK, H, Hkv, D, S, top_k, causal, blocks):
    q, k, _, _ = make_inputs(2, TQ, H, Hkv, D, TK=TK)
    mu, std = page_stats(k.detach(), S)
    theta = page_thresholds(
        q.detach(),
        mu,
        std,
        page_size=S,
        top_k=top_k,
        lam=0.5,
        causal=causal,
        **tiles(*blocks),
    )
    visible = visible_pages(TQ, mu.shape[2], S, top_k, causal, q.device)
    want = page_threshold(group_page_scores(q.detach(), mu, std, 0.5), visible, top_k).transpose(1, 2)
    assert visible.any()
    assert_close(theta, want)


def test_threshold_kernel_with_tied_pages():
    """Every page equal: the k-th and (k+1)-th scores tie and theta is that score, as with a sort."""
    q, k, _, _ = make_inputs(1, 32, 4, 2, 8)
    k = k.detach()[:, :4].repeat(1, 8, 1, 1)
    mu, std = page_stats(k, 4)
    theta = page_thresholds(q.detach(), mu, std, page_size=4, top_k=2, lam=0.5, causal=True)
    scores = group_page_scores(q.detach(), mu, std, 0.5)
    visible = visible_pages(32, 8, 4, 2, True, q.device)
    assert_close(theta, page_threshold(scores, visible, 2).transpose(1, 2))
    gated = visible.sum(-1) > 2
    assert_close(theta[:, gated], scores[..., 0].transpose(1, 2)[:, gated])


def test_long_sequence_matches_naive():
    q, k, v, dout = make_inputs(1, 128, 4, 1, 16)
    opts = dict(page_size=4, top_k=6, tau=1.0, lam=0.5)
    out, grads = run(softmask_attention, q, k, v, dout, **opts)
    ref, ref_grads = run(softmask_attention_naive, q, k, v, dout, **opts)
    assert_close(out, ref)
    for got, want in zip(grads, ref_grads):
        assert_close(got, want, atol=5e-5)


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("causal, TQ, TK", [(True, 30, 30), (False, 9, 30)])
def test_budget_covering_all_pages_is_dense(hard, causal, TQ, TK):
    q, k, v, dout = make_inputs(2, TQ, 8, 2, 16, TK=TK)
    opts = dict(page_size=4, top_k=8, tau=0.3, hard=hard, causal=causal)  # 8 pages: never gated
    dense, dense_grads = run(dense_attention, q, k, v, dout, causal=causal)
    for fn, kw in ((softmask_attention, tiles(8, 4)), (softmask_attention_naive, {})):
        out, grads = run(fn, q, k, v, dout, **opts, **kw)
        assert_close(out, dense)
        for got, want in zip(grads, dense_grads):
            assert_close(got, want)


def draw_untied(B, TQ, TK, H, Hkv, D, S, top_k, causal, min_gap=1e-3):
    """Fresh inputs whose page scores keep min_gap away from every theta (redrawn otherwise)."""
    while True:
        q, k, v, dout = make_inputs(B, TQ, H, Hkv, D, TK=TK)
        if boundary_gap(q, k, S, top_k, causal) > min_gap:
            return q, k, v, dout


def explicit_top_k_attention(q, k, v, S, top_k, causal, lam=0.5):
    """Hard-mode semantics built independently: torch.topk pages per (query, KV head) as a boolean key
    mask (plus the own page and any page of an ungated query), then SDPA."""
    TQ, H = q.shape[1:3]
    TK, Hkv = k.shape[1:3]
    mu, std = page_stats(k.detach(), S)
    scores = group_page_scores(q.detach(), mu, std, lam)  # [B, Hkv, TQ, P]
    P = mu.shape[2]
    if causal:
        own = torch.arange(TQ, device=q.device)[:, None] // S
        gateable = torch.arange(P, device=q.device)[None, :] < own
        gated = own > top_k
    else:
        gateable = torch.ones(TQ, P, dtype=torch.bool, device=q.device)
        gated = torch.full((TQ, 1), P > top_k, device=q.device)
    chosen = scores.masked_fill(~gateable, float("-inf")).topk(min(top_k, P), dim=-1).indices
    keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, chosen, True) | ~gateable | ~gated
    mask = keep.repeat_interleave(S, dim=-1)[..., :TK].repeat_interleave(H // Hkv, dim=1)
    if causal:
        mask = mask & torch.ones(TQ, TK, dtype=torch.bool, device=q.device).tril()
    kh, vh = (x.repeat_interleave(H // Hkv, 2).transpose(1, 2) for x in (k, v))
    out = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), kh, vh, attn_mask=mask)
    return out.transpose(1, 2)


@pytest.mark.parametrize("causal, TQ, TK", [(True, 40, 40), (False, 12, 43)])
def test_hard_mode_matches_naive_and_explicit_top_k(causal, TQ, TK):
    B, H, Hkv, D, S, top_k = 2, 8, 2, 16, 4, 2
    q, k, v, dout = draw_untied(B, TQ, TK, H, Hkv, D, S, top_k, causal)
    opts = dict(page_size=S, top_k=top_k, tau=0.5, hard=True, causal=causal)
    out, grads = run(softmask_attention, q, k, v, dout, **tiles(16, 4), **opts)
    ref, ref_grads = run(softmask_attention_naive, q, k, v, dout, **opts)
    assert_close(out, ref)
    for got, want in zip(grads, ref_grads):
        assert_close(got, want)
    assert_close(ref, explicit_top_k_attention(q, k, v, S, top_k, causal))


def test_small_tau_approaches_hard_mask():
    q, k, v, _ = draw_untied(1, 48, 48, 4, 2, 8, 4, 3, causal=True)
    gap = boundary_gap(q, k, 4, 3)
    opts = dict(page_size=4, top_k=3)
    q64, k64, v64 = (x.detach().double().cpu() for x in (q, k, v))
    hard = softmask_attention_naive(q64, k64, v64, tau=1.0, hard=True, **opts)
    errors = [
        (softmask_attention_naive(q64, k64, v64, tau=gap / c, **opts) - hard).abs().max().item()
        for c in (0.5, 5, 50)
    ]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-8
    triton_hard = softmask_attention(q, k, v, tau=1.0, hard=True, **opts)
    assert_close(softmask_attention(q, k, v, tau=gap / 50, **opts), triton_hard)
    assert_close(triton_hard, hard.float().to(triton_hard.device))


@pytest.mark.parametrize("causal, TQ, TK, S", [(True, 14, 14, 2), (False, 5, 14, 4)])
def test_gradcheck_naive_float64(causal, TQ, TK, S):
    """Finite differences on the naive gate with its stop-gradient inputs (theta, ||q||) held fixed."""
    B, H, Hkv, D, top_k, tau = 1, 2, 1, 4, 2, 0.7
    q, k, v, _ = (x.detach().double() for x in make_inputs(B, TQ, H, Hkv, D, TK=TK, device="cpu"))
    visible = visible_pages(TQ, -(-TK // S), S, top_k, causal, q.device)
    assert visible.any()

    def gated(q_, k_, v_, lam, theta):
        mu, std = page_stats(k_, S)
        lg = log_gate(group_page_scores(q_, mu, std, lam), theta, visible, tau, False)
        return gated_attention(q_, k_, v_, lg, S, D**-0.5, causal)

    def theta_at(q_, k_, lam):
        return page_threshold(group_page_scores(q_, *page_stats(k_, S), lam), visible, top_k)

    # k, v with q fixed (so ||q|| is a constant): gradients reach k through mu and std.
    theta = theta_at(q, k, 0.5)
    assert torch.autograd.gradcheck(
        lambda k_, v_: gated(q, k_, v_, 0.5, theta), (k.requires_grad_(), v.requires_grad_()), fast_mode=True
    )
    # q with lam = 0 (the detached ||q|| term vanishes).
    theta = theta_at(q, k.detach(), 0.0)
    assert torch.autograd.gradcheck(
        lambda q_: gated(q_, k.detach(), v.detach(), 0.0, theta), (q.requires_grad_(),), fast_mode=True
    )
    # The public naive function is exactly this composition.
    assert_close(
        softmask_attention_naive(q, k, v, page_size=S, top_k=top_k, tau=tau, causal=causal),
        gated(q, k, v, 0.5, theta_at(q, k, 0.5)),
    )


def test_float16_matches_float32_naive():
    q, k, v, dout = make_inputs(1, 40, 4, 1, 16, dtype=torch.float16)
    opts = dict(page_size=4, top_k=3, tau=0.5)
    out, grads = run(softmask_attention, q, k, v, dout, **opts)
    ref_inputs = (x.detach().float().requires_grad_() for x in (q, k, v))
    ref, ref_grads = run(softmask_attention_naive, *ref_inputs, dout.float(), **opts)
    assert out.dtype == torch.float16
    assert_close(out.float(), ref, atol=5e-3, rtol=1e-2)
    for got, want in zip(grads, ref_grads):
        assert_close(got.float(), want, atol=1e-2, rtol=1e-2)


def test_floor_is_finite_and_bad_arguments_raise():
    assert LOG_GATE_FLOOR > float("-inf")
    q, k, v, _ = make_inputs(1, 16, 4, 2, 8)
    opts = dict(page_size=4, top_k=2, tau=0.5)
    bad = [
        ((q[0], k, v), opts),
        ((q, k, v[:, :8]), opts),
        ((q, k[:, :, :1].expand(1, 16, 3, 8), v[:, :, :1].expand(1, 16, 3, 8)), opts),  # 4 % 3 != 0
        ((q[:, :8], k, v), opts),  # causal needs TQ == TK
        ((q[..., :4], k, v), opts),
        ((q, k, v), dict(opts, tau=0.0)),
        ((q, k, v), dict(opts, top_k=0)),
        ((q, k, v), dict(opts, page_size=0)),
    ]
    for fn in (softmask_attention, softmask_attention_naive):
        for args, kw in bad:
            with pytest.raises(ValueError):
                fn(*args, **kw)
    with pytest.raises(ValueError, match="power-of-two"):
        softmask_attention(q, k, v, page_size=3, top_k=2, tau=0.5)
    for fn in (softmask_attention, softmask_attention_naive):  # cross-attention takes any TQ
        assert fn(q[:, :8], k, v, causal=False, **opts).shape == (1, 8, 4, 8)
    with pytest.raises(ValueError, match="dtype"):
        softmask_attention(q.double(), k.double(), v.double(), **opts)
    if not CUDA:  # the interpreter cannot multiply bf16 tiles (triton-lang/triton#11584)
        with pytest.raises(ValueError, match="bfloat16"):
            softmask_attention(*(x.bfloat16() for x in (q, k, v)), **opts)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_small_tiles_refused_on_gpu():
    q, k, v, _ = make_inputs(1, 32, 4, 1, 16, dtype=torch.float16)
    with pytest.raises(ValueError, match=">= 16"):
        softmask_attention(q, k, v, page_size=4, top_k=2, tau=0.5, block_m=16, block_p=4)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize(
    "causal, TQ, TK, H, Hkv, S, top_k",
    [(True, 1000, 1000, 8, 2, 8, 16), (False, 448, 1500, 8, 8, 16, 24)],  # LLM prefill; Whisper cross-attn
)
def test_gpu_matches_naive(dtype, causal, TQ, TK, H, Hkv, S, top_k):
    q, k, v, dout = make_inputs(2, TQ, H, Hkv, 64, dtype=dtype, TK=TK)
    opts = dict(page_size=S, top_k=top_k, tau=2.0, causal=causal)
    out, grads = run(softmask_attention, q, k, v, dout, **opts)
    ref, ref_grads = run(
        softmask_attention_naive,
        *(x.float().detach().requires_grad_() for x in (q, k, v)),
        dout.float(),
        **opts,
    )
    tol = dict(atol=3e-2, rtol=3e-2) if dtype == torch.bfloat16 else dict(atol=2e-3, rtol=2e-3)
    assert_close(out.float(), ref, **tol)
    # dq: the gate's score gradient reaches only the group head that attains the max; where two heads tie
    # to rounding, kernel and twin may credit different heads, so those (query, group) rows are set aside
    tied = group_max_ties(q.detach(), k.detach(), S, top_k, causal)
    assert tied.float().mean() < 0.01, "too many near-ties for the dq check to mean anything"
    keep = ~tied.repeat_interleave(H // Hkv, dim=2)[..., None]
    assert_close(grads[0].float() * keep, ref_grads[0] * keep, **tol)
    for got, want in zip(grads[1:], ref_grads[1:]):
        assert_close(got.float(), want, **tol)
