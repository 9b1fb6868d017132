"""Triton soft-mask attention: flash-attention forward and backward with an in-kernel page log-gate.

Layout (contiguous): q [B, TQ, H, D], k, v [B, TK, Hkv, D], page stats mu [B, Hkv, P, D] and std [B, Hkv, P]
(float32, P = ceil(TK / S)), theta [B, TQ, Hkv] float32 (precomputed, stop-gradient). CAUSAL: self-attention
(TQ == TK, query t gated on pages before its own); otherwise cross-attention over all P pages.

One program owns one KV head and either a tile of BLOCK_M queries (forward, dq) or a block of
BLOCK_P pages = BLOCK_N = BLOCK_P * S keys (dk, dv, dmu, dstd). Its rows are the (query, group head)
pairs of that KV head, so the GQA group max of page scores and the group sum of the gate gradient are
tile-local reshapes. Key blocks are page aligned, so the per-page gate is an in-tile broadcast. Nothing
of size TQ x TK (or TQ x P) is ever written: the gate's score gradient dL/ds(t, p) lives only in registers
and is reduced into dq (via mu) in the dq kernel and into dmu, dstd in the dk/dv kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rows(m0, TQ, G: tl.constexpr, GP: tl.constexpr, BLOCK_M: tl.constexpr):
    """Row r of a query tile -> (query t, group head g, valid); G padded to the power of two GP."""
    r = tl.arange(0, BLOCK_M * GP)
    t = m0 + r // GP
    g = r % GP
    return t, g, (t < TQ) & (g < G)


@triton.jit
def _load_rows(
    X, b, t, g, kvh, valid, TQ, H: tl.constexpr, G: tl.constexpr, D: tl.constexpr, BLOCK_D: tl.constexpr
):
    """Load rows [R, BLOCK_D] of an activation [B, TQ, H, D] for (t, head kvh * G + g)."""
    d = tl.arange(0, BLOCK_D)
    ptrs = X + ((b * TQ + t[:, None]) * H + kvh * G + g[:, None]) * D + d[None, :]
    return tl.load(ptrs, mask=valid[:, None] & (d[None, :] < D), other=0.0)


@triton.jit
def _load_keys(
    X, b, n0, kvh, TK, HKV: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr
):
    """Offsets, mask and values [BLOCK_N, BLOCK_D] of keys n0.. of a [B, TK, HKV, D] tensor."""
    j = n0 + tl.arange(0, BLOCK_N)
    d = tl.arange(0, BLOCK_D)
    off = ((b * TK + j[:, None]) * HKV + kvh) * D + d[None, :]
    mask = (j[:, None] < TK) & (d[None, :] < D)
    return off, mask, tl.load(X + off, mask=mask, other=0.0)


@triton.jit
def _load_page_stats(
    MU,
    STD,
    b,
    kvh,
    page0,
    P,
    HKV: tl.constexpr,
    D: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """mu [BLOCK_P, BLOCK_D] and std [BLOCK_P] of pages page0.. (zeros past the last page)."""
    p = page0 + tl.arange(0, BLOCK_P)
    d = tl.arange(0, BLOCK_D)
    base = (b * HKV + kvh) * P + p
    mu = tl.load(MU + base[:, None] * D + d[None, :], mask=(p[:, None] < P) & (d[None, :] < D), other=0.0)
    std = tl.load(STD + base, mask=p < P, other=0.0)
    return mu, std


@triton.jit
def _group_scores(
    qf, qnorm, valid, mu, std, lam, BLOCK_M: tl.constexpr, GP: tl.constexpr, BLOCK_P: tl.constexpr
):
    """Per-row page scores s [R, BLOCK_P] and their group max per query [BLOCK_M, BLOCK_P]"""
    s = tl.dot(qf, tl.trans(mu), input_precision="ieee") + lam * qnorm[:, None] * std[None, :]
    s = tl.where(valid[:, None], s, -1.0e30)
    return s, tl.max(tl.reshape(s, (BLOCK_M, GP, BLOCK_P)), axis=1)


@triton.jit
def _gate(
    smax,
    theta,
    t,
    page0,
    P,
    K_TOP,
    tau,
    S: tl.constexpr,
    BLOCK_P: tl.constexpr,
    CAUSAL: tl.constexpr,
    HARD: tl.constexpr,
    FLOOR: tl.constexpr,
):
    """Log-gate lg [R, BLOCK_P] and d lg / d s (0 where not gated, clamped or hard)."""
    pages = page0 + tl.arange(0, BLOCK_P)
    if CAUSAL:
        own = t // S
        vis = (pages[None, :] < own[:, None]) & (own[:, None] > K_TOP)
    else:
        vis = (pages[None, :] < P) & (t[:, None] >= 0) & (P > K_TOP)
    diff = smax - theta[:, None]
    if HARD:
        lg = tl.where(vis & (diff <= 0), FLOOR, 0.0)
        dlg = tl.zeros_like(lg)
    else:
        x = diff / tau
        logsig = tl.minimum(x, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(x)))
        lg = tl.where(vis, tl.maximum(logsig, FLOOR), 0.0)
        dlg = tl.where(vis & (logsig > FLOOR), tl.sigmoid(-x) / tau, 0.0)
    return lg, dlg


@triton.jit
def _logits(
    q,
    kb,
    qf,
    qnorm,
    t,
    valid,
    n0,
    mu,
    std,
    theta,
    TK,
    P,
    K_TOP,
    scale,
    lam,
    tau,
    S: tl.constexpr,
    BLOCK_M: tl.constexpr,
    GP: tl.constexpr,
    BLOCK_P: tl.constexpr,
    CAUSAL: tl.constexpr,
    HARD: tl.constexpr,
    FLOOR: tl.constexpr,
    PREC: tl.constexpr,
):
    """Gated logits [R, BLOCK_N] (-inf where masked) of a query tile against the key block at n0.

    Also returns the row scores, their group max and d lg / d s, which the backward kernels need.
    """
    BLOCK_N: tl.constexpr = BLOCK_P * S
    s, gmax = _group_scores(qf, qnorm, valid, mu, std, lam, BLOCK_M, GP, BLOCK_P)
    smax = tl.reshape(tl.broadcast_to(gmax[:, None, :], (BLOCK_M, GP, BLOCK_P)), (BLOCK_M * GP, BLOCK_P))
    lg, dlg = _gate(smax, theta, t, n0 // S, P, K_TOP, tau, S, BLOCK_P, CAUSAL, HARD, FLOOR)
    lg_keys = tl.reshape(tl.broadcast_to(lg[:, :, None], (BLOCK_M * GP, BLOCK_P, S)), (BLOCK_M * GP, BLOCK_N))
    j = n0 + tl.arange(0, BLOCK_N)
    allowed = valid[:, None] & (j[None, :] < TK)
    if CAUSAL:
        allowed = allowed & (j[None, :] <= t[:, None])
    z = tl.dot(q, tl.trans(kb), input_precision=PREC) * scale + lg_keys
    return tl.where(allowed, z, float("-inf")), s, smax, dlg


@triton.jit
def _score_grad(
    ds, s, smax, dlg, valid, BLOCK_M: tl.constexpr, GP: tl.constexpr, BLOCK_P: tl.constexpr, S: tl.constexpr
):
    """dL/ds per (row, page) [R, BLOCK_P]: the group's summed logit gradient on the page times
    d lg / d s, routed to the row (query head) that attains the group max."""
    per_page = tl.sum(tl.reshape(ds, (BLOCK_M * GP, BLOCK_P, S)), axis=2)
    group = tl.sum(tl.reshape(per_page, (BLOCK_M, GP, BLOCK_P)), axis=1)
    group = tl.reshape(tl.broadcast_to(group[:, None, :], (BLOCK_M, GP, BLOCK_P)), (BLOCK_M * GP, BLOCK_P))
    return tl.where(valid[:, None] & (s == smax), group * dlg, 0.0)


@triton.jit
def _query_tile(
    Q,
    THETA,
    b,
    kvh,
    m0,
    TQ,
    H: tl.constexpr,
    HKV: tl.constexpr,
    G: tl.constexpr,
    GP: tl.constexpr,
    D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Rows of a query tile: t, g, valid, q [R, BLOCK_D], q in fp32, ||q|| (detached) and theta [R]."""
    t, g, valid = _rows(m0, TQ, G, GP, BLOCK_M)
    q = _load_rows(Q, b, t, g, kvh, valid, TQ, H, G, D, BLOCK_D)
    qf = q.to(tl.float32)
    theta = tl.load(THETA + (b * TQ + t) * HKV + kvh, mask=valid, other=0.0)
    return t, g, valid, q, qf, tl.sqrt(tl.sum(qf * qf, axis=1)), theta


@triton.jit
def _fwd_kernel(
    Q,
    K,
    V,
    MU,
    STD,
    THETA,
    OUT,
    LSE,
    TQ,
    TK,
    P,
    K_TOP,
    scale,
    lam,
    tau,
    H: tl.constexpr,
    HKV: tl.constexpr,
    G: tl.constexpr,
    GP: tl.constexpr,
    D: tl.constexpr,
    S: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_D: tl.constexpr,
    CAUSAL: tl.constexpr,
    HARD: tl.constexpr,
    FLOOR: tl.constexpr,
    PREC: tl.constexpr,
):
    """Online-softmax forward for one (b, kvh, query tile); writes OUT [B, TQ, H, D] and LSE [B, TQ, H]."""
    BLOCK_N: tl.constexpr = BLOCK_P * S
    m0 = tl.program_id(0) * BLOCK_M
    b = tl.program_id(1) // HKV
    kvh = tl.program_id(1) % HKV
    t, g, valid, q, qf, qnorm, theta = _query_tile(
        Q, THETA, b, kvh, m0, TQ, H, HKV, G, GP, D, BLOCK_M, BLOCK_D
    )
    m_i = tl.full((BLOCK_M * GP,), -1.0e30, tl.float32)
    l_i = tl.zeros((BLOCK_M * GP,), tl.float32)
    acc = tl.zeros((BLOCK_M * GP, BLOCK_D), tl.float32)
    end = TK
    if CAUSAL:  # keys after the tile's last query are never read
        end = tl.minimum(TK, m0 + BLOCK_M)
    for n0 in range(0, end, BLOCK_N):
        _, _, kb = _load_keys(K, b, n0, kvh, TK, HKV, D, BLOCK_N, BLOCK_D)
        _, _, vb = _load_keys(V, b, n0, kvh, TK, HKV, D, BLOCK_N, BLOCK_D)
        mu, std = _load_page_stats(MU, STD, b, kvh, n0 // S, P, HKV, D, BLOCK_P, BLOCK_D)
        z, _, _, _ = _logits(
            q,
            kb,
            qf,
            qnorm,
            t,
            valid,
            n0,
            mu,
            std,
            theta,
            TK,
            P,
            K_TOP,
            scale,
            lam,
            tau,
            S,
            BLOCK_M,
            GP,
            BLOCK_P,
            CAUSAL,
            HARD,
            FLOOR,
            PREC,
        )
        m_new = tl.maximum(m_i, tl.max(z, axis=1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(z - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(vb.dtype), vb, input_precision=PREC)
        m_i = m_new
    l_safe = tl.where(l_i > 0, l_i, 1.0)
    row = (b * TQ + t) * H + kvh * G + g
    d = tl.arange(0, BLOCK_D)
    out = (acc / l_safe[:, None]).to(OUT.dtype.element_ty)
    tl.store(OUT + row[:, None] * D + d[None, :], out, mask=valid[:, None] & (d[None, :] < D))
    tl.store(LSE + row, m_i + tl.log(l_safe), mask=valid)


@triton.jit
def _bwd_dq_kernel(
    Q,
    K,
    V,
    MU,
    STD,
    THETA,
    DO,
    LSE,
    DELTA,
    DQ,
    TQ,
    TK,
    P,
    K_TOP,
    scale,
    lam,
    tau,
    H: tl.constexpr,
    HKV: tl.constexpr,
    G: tl.constexpr,
    GP: tl.constexpr,
    D: tl.constexpr,
    S: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_D: tl.constexpr,
    CAUSAL: tl.constexpr,
    HARD: tl.constexpr,
    FLOOR: tl.constexpr,
    PREC: tl.constexpr,
):
    """dq for one (b, kvh, query tile): attention path plus the gate path dL/ds · mu (||q|| detached)."""
    BLOCK_N: tl.constexpr = BLOCK_P * S
    m0 = tl.program_id(0) * BLOCK_M
    b = tl.program_id(1) // HKV
    kvh = tl.program_id(1) % HKV
    t, g, valid, q, qf, qnorm, theta = _query_tile(
        Q, THETA, b, kvh, m0, TQ, H, HKV, G, GP, D, BLOCK_M, BLOCK_D
    )
    do = _load_rows(DO, b, t, g, kvh, valid, TQ, H, G, D, BLOCK_D)
    row = (b * TQ + t) * H + kvh * G + g
    lse = tl.load(LSE + row, mask=valid, other=0.0)
    delta = tl.load(DELTA + row, mask=valid, other=0.0)
    dq = tl.zeros((BLOCK_M * GP, BLOCK_D), tl.float32)
    end = TK
    if CAUSAL:  # keys after the tile's last query are never read
        end = tl.minimum(TK, m0 + BLOCK_M)
    for n0 in range(0, end, BLOCK_N):
        _, _, kb = _load_keys(K, b, n0, kvh, TK, HKV, D, BLOCK_N, BLOCK_D)
        _, _, vb = _load_keys(V, b, n0, kvh, TK, HKV, D, BLOCK_N, BLOCK_D)
        mu, std = _load_page_stats(MU, STD, b, kvh, n0 // S, P, HKV, D, BLOCK_P, BLOCK_D)
        z, s, smax, dlg = _logits(
            q,
            kb,
            qf,
            qnorm,
            t,
            valid,
            n0,
            mu,
            std,
            theta,
            TK,
            P,
            K_TOP,
            scale,
            lam,
            tau,
            S,
            BLOCK_M,
            GP,
            BLOCK_P,
            CAUSAL,
            HARD,
            FLOOR,
            PREC,
        )
        p = tl.exp(z - lse[:, None])
        ds = p * (tl.dot(do, tl.trans(vb), input_precision=PREC) - delta[:, None])
        dq += tl.dot(ds.to(kb.dtype), kb, input_precision=PREC) * scale
        if not HARD:
            dscore = _score_grad(ds, s, smax, dlg, valid, BLOCK_M, GP, BLOCK_P, S)
            dq += tl.dot(dscore, mu, input_precision="ieee")
    d = tl.arange(0, BLOCK_D)
    tl.store(
        DQ + row[:, None] * D + d[None, :], dq.to(DQ.dtype.element_ty), mask=valid[:, None] & (d[None, :] < D)
    )


@triton.jit
def _bwd_dkv_kernel(
    Q,
    K,
    V,
    MU,
    STD,
    THETA,
    DO,
    LSE,
    DELTA,
    DK,
    DV,
    DMU,
    DSTD,
    TQ,
    TK,
    P,
    K_TOP,
    scale,
    lam,
    tau,
    H: tl.constexpr,
    HKV: tl.constexpr,
    G: tl.constexpr,
    GP: tl.constexpr,
    D: tl.constexpr,
    S: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_D: tl.constexpr,
    CAUSAL: tl.constexpr,
    HARD: tl.constexpr,
    FLOOR: tl.constexpr,
    PREC: tl.constexpr,
):
    """dk, dv of one (b, kvh, key block) summed over its G heads, and dmu, dstd of the block's pages."""
    BLOCK_N: tl.constexpr = BLOCK_P * S
    n0 = tl.program_id(0) * BLOCK_N
    b = tl.program_id(1) // HKV
    kvh = tl.program_id(1) % HKV
    kv_off, kv_mask, kb = _load_keys(K, b, n0, kvh, TK, HKV, D, BLOCK_N, BLOCK_D)
    _, _, vb = _load_keys(V, b, n0, kvh, TK, HKV, D, BLOCK_N, BLOCK_D)
    mu, std = _load_page_stats(MU, STD, b, kvh, n0 // S, P, HKV, D, BLOCK_P, BLOCK_D)
    dk = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    dmu = tl.zeros((BLOCK_P, BLOCK_D), tl.float32)
    dstd = tl.zeros((BLOCK_P,), tl.float32)
    start = 0
    if CAUSAL:  # query tiles before this key block never see it
        start = (n0 // BLOCK_M) * BLOCK_M
    for m0 in range(start, TQ, BLOCK_M):
        t, g, valid, q, qf, qnorm, theta = _query_tile(
            Q, THETA, b, kvh, m0, TQ, H, HKV, G, GP, D, BLOCK_M, BLOCK_D
        )
        do = _load_rows(DO, b, t, g, kvh, valid, TQ, H, G, D, BLOCK_D)
        row = (b * TQ + t) * H + kvh * G + g
        lse = tl.load(LSE + row, mask=valid, other=0.0)
        delta = tl.load(DELTA + row, mask=valid, other=0.0)
        z, s, smax, dlg = _logits(
            q,
            kb,
            qf,
            qnorm,
            t,
            valid,
            n0,
            mu,
            std,
            theta,
            TK,
            P,
            K_TOP,
            scale,
            lam,
            tau,
            S,
            BLOCK_M,
            GP,
            BLOCK_P,
            CAUSAL,
            HARD,
            FLOOR,
            PREC,
        )
        p = tl.exp(z - lse[:, None])
        dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=PREC)
        ds = p * (tl.dot(do, tl.trans(vb), input_precision=PREC) - delta[:, None])
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PREC) * scale
        if not HARD:
            dscore = _score_grad(ds, s, smax, dlg, valid, BLOCK_M, GP, BLOCK_P, S)
            dmu += tl.dot(tl.trans(dscore), qf, input_precision="ieee")
            dstd += lam * tl.sum(dscore * qnorm[:, None], axis=0)
    tl.store(DK + kv_off, dk.to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + kv_off, dv.to(DV.dtype.element_ty), mask=kv_mask)
    pages = n0 // S + tl.arange(0, BLOCK_P)
    d = tl.arange(0, BLOCK_D)
    base = (b * HKV + kvh) * P + pages
    tl.store(DMU + base[:, None] * D + d[None, :], dmu, mask=(pages[:, None] < P) & (d[None, :] < D))
    tl.store(DSTD + base, dstd, mask=pages < P)


def tile_params(
    H: int,
    Hkv: int,
    D: int,
    page_size: int,
    causal: bool,
    block_m: int | None,
    block_p: int | None,
    on_gpu: bool,
) -> dict:
    """Shape constexprs shared by the attention and threshold kernels. Default tiles: 64 rows of
    (query, group head) pairs and max(16, 64 / S) pages, so every tl.dot dimension is >= 16 on GPU.
    Smaller explicit tiles are for the CPU interpreter only (on_gpu: refuse them)."""
    if page_size & (page_size - 1):
        raise ValueError(f"the Triton soft-mask kernels need a power-of-two page_size, got {page_size}")
    GP = triton.next_power_of_2(H // Hkv)
    block_m = max(1, 64 // GP) if block_m is None else block_m
    block_p = max(16, 64 // page_size) if block_p is None else block_p
    if block_m & (block_m - 1) or block_p & (block_p - 1):
        raise ValueError(f"block_m and block_p must be powers of two, got {block_m}, {block_p}")
    if on_gpu and min(block_m * GP, block_p, block_p * page_size) < 16:
        raise ValueError(
            f"on GPU every tl.dot dimension must be >= 16: block_m x group ({block_m} x {GP}), block_p "
            f"({block_p} pages) and block_p x page_size ({block_p * page_size} keys); leave the tiles unset"
        )
    return dict(
        H=H,
        HKV=Hkv,
        G=H // Hkv,
        GP=GP,
        D=D,
        S=page_size,
        BLOCK_M=block_m,
        BLOCK_P=block_p,
        BLOCK_D=max(16, triton.next_power_of_2(D)),  # tl.dot needs K >= 16 on GPU
        CAUSAL=causal,
    )


def _constexprs(
    q: torch.Tensor,
    k: torch.Tensor,
    page_size: int,
    causal: bool,
    hard: bool,
    floor: float,
    block_m: int | None,
    block_p: int | None,
) -> dict:
    """Compile-time parameters of the three attention kernels."""
    tiles = tile_params(q.shape[2], k.shape[2], q.shape[3], page_size, causal, block_m, block_p, q.is_cuda)
    return dict(tiles, HARD=hard, FLOOR=floor, PREC="ieee" if q.dtype == torch.float32 else "tf32")


_STAGES: dict[tuple, int] = {}  # (kernel, constexprs) -> software-pipeline stages that fit in shared memory


def _launch(kernel, grid, args: tuple, constexprs: dict) -> None:
    """Launch `kernel`; when its tiles do not fit the GPU's shared memory at Triton's default pipeline depth
    (large pages make wide key tiles: S 16 in fp32 needs ~350 KB at 3 stages on Hopper), retry with fewer
    stages. The launch is refused before anything runs, so a retry is safe; the depth that fit is kept."""
    key = (kernel.fn.__name__, tuple(sorted(constexprs.items())))
    stages = _STAGES.get(key)
    while True:
        try:
            options = {} if stages is None else {"num_stages": stages}
            kernel[grid](*args, **constexprs, **options)
            break
        except triton.runtime.errors.OutOfResources:
            if stages == 1:
                raise
            stages = 2 if stages is None else stages - 1
    if stages is not None:
        _STAGES[key] = stages


def softmask_forward(
    q,
    k,
    v,
    mu,
    std,
    theta,
    *,
    page_size: int,
    top_k: int,
    tau: float,
    lam: float,
    causal: bool,
    hard: bool,
    scale: float,
    floor: float,
    block_m: int | None = None,
    block_p: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward. Contiguous q [B, TQ, H, D], k, v [B, TK, Hkv, D]; mu [B, Hkv, P, D] and
    std [B, Hkv, P] float32; theta [B, TQ, Hkv] float32. Returns out [B, TQ, H, D] (q's dtype) and
    lse [B, TQ, H] float32 (log-sum-exp of the gated logits, for the backward)."""
    B, TQ, H, _ = q.shape
    c = _constexprs(q, k, page_size, causal, hard, floor, block_m, block_p)
    out = torch.empty_like(q)
    lse = torch.empty(B, TQ, H, device=q.device, dtype=torch.float32)
    grid = (triton.cdiv(TQ, c["BLOCK_M"]), B * c["HKV"])
    _launch(_fwd_kernel, grid, (q, k, v, mu, std, theta, out, lse, TQ, k.shape[1], mu.shape[2], top_k, scale,
                                lam, tau), c)
    return out, lse


def softmask_backward(
    q,
    k,
    v,
    mu,
    std,
    theta,
    out,
    lse,
    dout,
    *,
    page_size: int,
    top_k: int,
    tau: float,
    lam: float,
    causal: bool,
    hard: bool,
    scale: float,
    floor: float,
    block_m: int | None = None,
    block_p: int | None = None,
):
    """Launch the backward. Returns dq [B, TQ, H, D], dk, dv [B, TK, Hkv, D] (input dtypes) and
    dmu [B, Hkv, P, D], dstd [B, Hkv, P] float32 (zero in hard mode)."""
    B, TQ = q.shape[:2]
    c = _constexprs(q, k, page_size, causal, hard, floor, block_m, block_p)
    delta = (dout.float() * out.float()).sum(dim=-1).contiguous()  # [B, TQ, H]
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    dmu, dstd = torch.empty_like(mu), torch.empty_like(std)
    args = (TQ, k.shape[1], mu.shape[2], top_k, scale, lam, tau)
    grid_q = (triton.cdiv(TQ, c["BLOCK_M"]), B * c["HKV"])
    _launch(_bwd_dq_kernel, grid_q, (q, k, v, mu, std, theta, dout, lse, delta, dq, *args), c)
    grid_k = (triton.cdiv(k.shape[1], c["BLOCK_P"] * page_size), B * c["HKV"])
    _launch(_bwd_dkv_kernel, grid_k, (q, k, v, mu, std, theta, dout, lse, delta, dk, dv, dmu, dstd, *args), c)
    return dq, dk, dv, dmu, dstd
