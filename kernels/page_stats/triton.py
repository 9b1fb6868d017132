"""Triton kernel: write new K/V tokens into their pages and update the page statistics in one pass.

One program per (work item, KV head). It reads only the new tokens (<= S of them) and, when the page
already held keys, that sequence's fp32 Welford accumulator of the open page (Chan's merge of the old
and the new chunk), never the page's old keys. Same contract as `append_kv_naive`.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .._checks import CODE_OF, INT8
from .._pdl import pdl_enter, pdl_launch
from ..select_pages.registry import CODE_MAX
from .naive import PageStats, StatAccumulators, validate_append


@triton.jit
def _round_e4m3(x):
    """fp32 x (|x| <= 448) rounded to the nearest e4m3 value, ties to even, in fp32 arithmetic: 3 mantissa
    bits in each binade >= 2^-6, steps of 2^-9 below. The cast to fp8 is then exact (Triton's CPU
    interpreter mis-rounds values that round up into the next binade, e.g. 127.9 -> 64)."""
    e = ((x.to(tl.int32, bitcast=True) >> 23) & 255) - 127
    e = tl.maximum(e, -6)
    step = ((e - 3 + 127) << 23).to(tl.float32, bitcast=True)      # 2^(e-3)
    y = x * ((3 - e + 127) << 23).to(tl.float32, bitcast=True)      # x / step, exact
    y = (y + 12582912.0) - 12582912.0                                # 1.5 * 2^23: round to nearest even
    return y * step


@triton.jit
def _append_kernel(
    k_ptr, v_ptr, stride_kt, stride_kh, stride_vt, stride_vh,
    work_ptr, kpool_ptr, vpool_ptr,
    mean_ptr, std_ptr, sigma_ptr, kmin_ptr, kmax_ptr, scale_ptr, vmean_ptr, rmean_ptr,
    in_mean_ptr, in_m2_ptr, in_m2d_ptr, in_vmean_ptr, out_mean_ptr, out_m2_ptr, out_m2d_ptr, out_vmean_ptr,
    S: tl.constexpr, HKV: tl.constexpr, D: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr, HAS_SIGMA: tl.constexpr, HAS_MINMAX: tl.constexpr,
    HAS_SCALE: tl.constexpr, HAS_VMEAN: tl.constexpr, HAS_RMEAN: tl.constexpr, CODE_MAX: tl.constexpr,
    INT8: tl.constexpr, PDL: tl.constexpr = False,
):
    pdl_enter(PDL)
    w = tl.program_id(0)
    h = tl.program_id(1)
    seq = tl.load(work_ptr + w * 6 + 0)
    page = tl.load(work_ptr + w * 6 + 1).to(tl.int64)
    tok0 = tl.load(work_ptr + w * 6 + 2).to(tl.int64)
    n_new = tl.load(work_ptr + w * 6 + 3)
    n_old = tl.load(work_ptr + w * 6 + 4)
    is_last = tl.load(work_ptr + w * 6 + 5)

    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    tmask = offs_s < n_new
    dmask = offs_d < D
    m2mask = tmask[:, None] & dmask[None, :]
    kx = tl.load(k_ptr + (tok0 + offs_s)[:, None] * stride_kt + h * stride_kh + offs_d[None, :], mask=m2mask)
    vx = tl.load(v_ptr + (tok0 + offs_s)[:, None] * stride_vt + h * stride_vh + offs_d[None, :], mask=m2mask)
    slot = n_old + offs_s
    dst = ((page * S + slot)[:, None] * HKV + h) * D + offs_d[None, :]
    kq = kx.to(kpool_ptr.dtype.element_ty)
    tl.store(kpool_ptr + dst, kq, mask=m2mask)
    vq = vx.to(vpool_ptr.dtype.element_ty)
    tl.store(vpool_ptr + dst, vq, mask=m2mask)

    # Statistics of the keys as stored (rounded to the pool dtype), in fp32.
    kf = tl.where(m2mask, kq.to(tl.float32), 0.0)
    nc = n_new.to(tl.float32)
    c_mean = tl.sum(kf, axis=0) / nc
    diff = tl.where(m2mask, kf - c_mean[None, :], 0.0)
    c_m2d = tl.sum(diff * diff, axis=0)

    # Chan's merge with the open page's accumulator; with n_old == 0 it reduces to the chunk alone.
    has_old = n_old > 0
    acc = seq * HKV + h
    a_mean = tl.load(in_mean_ptr + acc * D + offs_d, mask=dmask & has_old, other=0.0)
    a_m2 = tl.load(in_m2_ptr + acc, mask=has_old, other=0.0)
    no = n_old.to(tl.float32)
    n = no + nc
    delta = c_mean - a_mean
    mean = a_mean + delta * (nc / n)
    cross = delta * delta * (no * nc / n)
    m2 = a_m2 + tl.sum(c_m2d + cross, axis=0)

    ps = page * HKV + h
    if HAS_SCALE:  # codes of the mean and their scale max|mu| / CODE_MAX (1 for an all-zero mean)
        amax = tl.max(tl.where(dmask, tl.abs(mean), 0.0), axis=0)
        sc = tl.where(amax > 0, amax / CODE_MAX, 1.0)
        tl.store(scale_ptr + ps, sc)
        y = tl.math.div_rn(mean, sc)
        if INT8:  # round to the nearest integer, ties to even (1.5 * 2^23), within [-127, 127]: the cast is exact
            code = tl.minimum(tl.maximum((y + 12582912.0) - 12582912.0, -127.0), 127.0)
        else:
            code = _round_e4m3(y)
        tl.store(mean_ptr + ps * D + offs_d, code.to(mean_ptr.dtype.element_ty), mask=dmask)
        if HAS_RMEAN:  # the pool-dtype mean beside the codes, for re-ranking their candidates
            tl.store(rmean_ptr + ps * D + offs_d, mean.to(rmean_ptr.dtype.element_ty), mask=dmask)
    else:
        tl.store(mean_ptr + ps * D + offs_d, mean.to(mean_ptr.dtype.element_ty), mask=dmask)
    tl.store(std_ptr + ps, tl.sqrt(tl.maximum(m2 / n, 0.0)))
    write_acc = is_last != 0
    tl.store(out_mean_ptr + acc * D + offs_d, mean, mask=dmask & write_acc)
    tl.store(out_m2_ptr + acc, m2, mask=write_acc)
    if HAS_SIGMA:
        a_m2d = tl.load(in_m2d_ptr + acc * D + offs_d, mask=dmask & has_old, other=0.0)
        m2d = a_m2d + c_m2d + cross
        sigma = tl.sqrt(tl.maximum(m2d / n, 0.0))
        tl.store(sigma_ptr + ps * D + offs_d, sigma.to(sigma_ptr.dtype.element_ty), mask=dmask)
        tl.store(out_m2d_ptr + acc * D + offs_d, m2d, mask=dmask & write_acc)
    if HAS_MINMAX:
        c_min = tl.min(tl.where(m2mask, kf, float("inf")), axis=0)
        c_max = tl.max(tl.where(m2mask, kf, float("-inf")), axis=0)
        o_min = tl.load(kmin_ptr + ps * D + offs_d, mask=dmask & has_old, other=float("inf")).to(tl.float32)
        o_max = tl.load(kmax_ptr + ps * D + offs_d, mask=dmask & has_old, other=float("-inf")).to(tl.float32)
        lo = tl.minimum(c_min, o_min).to(kmin_ptr.dtype.element_ty)
        hi = tl.maximum(c_max, o_max).to(kmax_ptr.dtype.element_ty)
        tl.store(kmin_ptr + ps * D + offs_d, lo, mask=dmask)
        tl.store(kmax_ptr + ps * D + offs_d, hi, mask=dmask)
    if HAS_VMEAN:  # value mean of the values as stored, merged with the open page's fp32 running mean
        c_vmean = tl.sum(tl.where(m2mask, vq.to(tl.float32), 0.0), axis=0) / nc
        a_vmean = tl.load(in_vmean_ptr + acc * D + offs_d, mask=dmask & has_old, other=0.0)
        vmean = a_vmean + (c_vmean - a_vmean) * (nc / n)
        tl.store(vmean_ptr + ps * D + offs_d, vmean.to(vmean_ptr.dtype.element_ty), mask=dmask)
        tl.store(out_vmean_ptr + acc * D + offs_d, vmean, mask=dmask & write_acc)


def append_kv(k, v, work, k_pool, v_pool, stats: PageStats, acc_in: StatAccumulators,
              acc_out: StatAccumulators, *, validate: bool = True) -> None:
    """Fused K/V write + incremental page statistics (in place); arguments as in `append_kv_naive`.

    k, v may be strided views (last dim contiguous); pools, stats and accumulators must be contiguous.
    validate=False skips the checks (~30 us of host time) for callers that built the arguments themselves.
    """
    if validate:
        validate_append(k, v, work, k_pool, v_pool, stats, acc_in, acc_out)
        dense = [k_pool, v_pool, work, *[t for t in (*stats, *acc_in, *acc_out) if t is not None]]
        if not all(t.is_contiguous() for t in dense):
            raise ValueError("pools, work list, stats and accumulators must be contiguous")
    if k.stride(-1) != 1 or v.stride(-1) != 1:
        raise ValueError("k and v must be contiguous in the head dimension")
    if work.shape[0] == 0:
        return
    P, S, Hkv, D = k_pool.shape
    has_sigma, has_minmax, has_vmean = stats.sigma is not None, stats.kmin is not None, stats.vmean is not None
    dummy = stats.std
    _append_kernel[(work.shape[0], Hkv)](
        k, v, k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        work, k_pool, v_pool,
        stats.mean, stats.std, stats.sigma if has_sigma else dummy,
        stats.kmin if has_minmax else dummy, stats.kmax if has_minmax else dummy,
        stats.scale if stats.scale is not None else dummy, stats.vmean if has_vmean else dummy,
        stats.rmean if stats.rmean is not None else dummy,
        acc_in.mean, acc_in.m2, acc_in.m2d if has_sigma else dummy, acc_in.vmean if has_vmean else dummy,
        acc_out.mean, acc_out.m2, acc_out.m2d if has_sigma else dummy, acc_out.vmean if has_vmean else dummy,
        S=S, HKV=Hkv, D=D, BLOCK_S=triton.next_power_of_2(S), BLOCK_D=triton.next_power_of_2(D),
        HAS_SIGMA=has_sigma, HAS_MINMAX=has_minmax, HAS_SCALE=stats.scale is not None, HAS_VMEAN=has_vmean,
        HAS_RMEAN=stats.rmean is not None,
        CODE_MAX=CODE_MAX.get(CODE_OF.get(stats.mean.dtype), 1.0), INT8=stats.mean.dtype == INT8,
        **pdl_launch(k_pool),
    )
