"""Triton page scoring + top-k selection for decode (same contract as `select_pages_naive`).

One program per (sequence, KV head) selects; the G query heads of the KV head form one tile, so each
page's statistics are read once per KV head. Scores go to an fp32 scratch row [max_pages]. By default
(`SelectConfig.prefilter`, k <= 512) the top-k of the row is found by `_prefilter_select`: two streaming
passes (interleaved group maxima give a lower bound of the k-th score; the pages at or above it are
appended, in logical order, to a candidate buffer), then the k-th and the compaction over the few
candidates; where more than the buffer survive (e.g. many equal scores), the radix passes below. Without
the prefilter, the k-th largest of the row's order-preserving uint32 keys is found either by a single read
(rows of up to `SelectConfig.single_read_max` pages, 16K: 128K tokens at S = 8): the row is loaded once
into registers and a 32-step bisection counts keys in registers; or, for longer rows, by a 4-pass radix
select (8-bit digits, `tl.histogram`) that re-reads the row per pass. A compaction pass (one packed scan a
step) then writes the winners in ascending logical order, ties going to the lower logical page; after the
single read it re-reads the row from L2 in steps of 8 scores a thread (compacting the whole in-register
row spills at 16K pages). Long rows, or too few (sequence, KV head) pairs to fill the SMs, are scored first
by a split-K kernel (about `pages_per_program` pages per program); otherwise scoring is fused into the
select kernel. Launch parameters: `SelectConfig`.

Split-filter path (`SelectConfig.filter_split`; by default where the (sequence, KV head) rows alone do not
fill the SMs, i.e. batch 1): programs of `filter_split` pages score their slice of a row and keep only its
local top-k (same order: score descending, lower logical page first) as candidates; a merge program per
row picks the top-k of its n_splits * k candidates in registers. Every global winner is in its split's
local top-k, so the selection is exactly the whole-row one. fp8 (e4m3) means with a per-(page, head) scale
(`scale=`) are read as one byte a dimension and scaled after the dot product.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .._checks import check_tensor
from .._pdl import pdl_enter, pdl_launch
from .naive import validate_select
from .registry import SCORES, require, scores_for

MODE_IDS = {name: SCORES[name].triton_id for name in scores_for("select")}
# Triton kernels run under the CPU interpreter (the test suite without CUDA; tests/conftest.py sets it before
# import): a compile-time switch for formulations that are equal in value but far cheaper interpreted.
_INTERPRETED = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"))
MAX_SINGLE_READ = 16384  # longest row held in registers (32 fp32 a thread at 16 warps)
MAX_BLOCK_R = 16384  # the compaction scan packs two counts <= BLOCK_R into one int32
# Shortest row the split filter takes by default. H100, batch 1 (benchmarks/kernels_h100_issue12.json): the
# whole-row select wins below 4K pages (0.0159 vs 0.0207 ms at 1K, 0.0195 vs 0.0223 at 2K), ties at 4K
# (0.0264 / 0.0259) and loses at 16K (0.0573 vs 0.0446).
FILTER_MIN_PAGES = 4096
INT8_D64_MAXNREG = 48  # SelectConfig.score_maxnreg's default for int8 products at head_dim <= 64


@dataclass(frozen=True)
class SelectConfig:
    """Launch parameters, tunable on the GPU (scripts/sweep_launch.py sweeps them; bench_kernels.py
    --select-config runs one through every arm).

    block_p: pages per scoring tile (perdim / quest use half: they hold two tiles in registers);
    block_r: scores per step of the prefilter, radix and compaction passes (None: 256 per warp after the
        single read; else 1024 when the (sequence, KV head) programs fill the SMs, else the row's pages rounded
        up to a power of two within 1024..4096, so few programs take few long steps);
    select_warps: warps of the radix select (None: block_r // 256; the prefilter: 4 at block_r 1024, 8 above);
    pages_per_program, programs_per_sm: split scoring into programs of about that many pages, and at
        least that many programs per SM (while each keeps a whole tile); prefetch: load the next tile's
        page ids one step ahead; score_warps / score_stages: launch options of the scoring loops
        (score_stages None: 1 with TC scoring of bf16 means or on the split-filter path, i.e. plain loads
        that keep their evict_first hint instead of cp.async; Triton's default otherwise. H100,
        benchmarks/kernels_h100_issue12_tc2.json: bf16 TC score + top-k 0.2929 vs 0.3271 ms at batch 80 /
        32K, 1.1759 vs 1.3056 at 128K, 0.0401 vs 0.0514 at batch 1 / 128K; fp8 TC 0.2223 vs 0.2294 (3
        stages better) at batch 80 / 32K, 0.0351 vs 0.0372 (1 stage better) at batch 1 / 128K);
    single_read_max: longest row (page-table columns, <= 16384) selected by the single-read bisection
        (0: always the radix passes); single_read_warps: its warps (None: the padded row / 1024, 4..16).
    filter_split: the split-filter path: each row is scored by programs of `filter_split` pages (a power
        of two in [16, 4096]) that each keep only their local top-k as candidates, and one small merge per
        row selects among n_splits * k candidates; 0: the split scoring + whole-row select above; None:
        the filter path, split sized for >= programs_per_sm programs per SM, where the (sequence, KV
        head) rows alone do not fill the SMs (batch 1) and rows hold >= FILTER_MIN_PAGES pages, else 0.
    fma: score without tl.dot (fp32 multiply-adds over each query row of the KV head's group, reduced
        over D): no shared-memory staging of the widened statistics tile and no padding of G to 16. None:
        with fp8 means where TC scoring (below) is off or not eligible. Measured on an H100 (benchmarks/kernels_h100_issue12.json, batch 80): fp8
        score + top-k 8-12 % faster with it, bf16 8-19 % slower (the widened bf16 tile's multiply-adds
        cost more than the dot); batch 1 within 2 %.
    tc: score with the statistics tile as the matrix product's left operand (pages as rows), read in its
        own 16-bit dtype (bf16; fp8 means widened to bf16 in registers), against q split into bf16 hi + lo
        parts (q = hi + lo to 2^-16 relative, finer than tf32's 2^-11): no fp32 widening of the tile and
        no fp32 staging in shared memory; quest as kmin·min(q, 0) + kmax·max(q, 0) (equal to the max
        form). Only for bf16 statistics (other dtypes keep the tf32 / FMA paths). None: on where
        eligible. H100 (benchmarks/kernels_h100_issue12_tc2.json, default launch vs TC, same run): score +
        top-k at batch 80, 32K / 128K: bf16 0.3056 -> 0.2929 / 1.1996 -> 1.1759 ms (with 1 stage), fp8
        0.2601 -> 0.2223 / 1.0247 -> 0.8656 ms; batch 1, 128K: 0.0447 -> 0.0401 (bf16), 0.0384 -> 0.0351
        (fp8); the same pages as the tf32 dot at every shape; scores within 1.8e-7 of the fp32 twin's
        largest (tf32: 1.0e-6).
    scores_l2: store the scores with L2 evict_last priority, so the top-k re-reads them from L2. The
        statistics loads that Triton pipelines through shared memory (cp.async: tl.dot and TC scoring)
        lose their evict_first hint (sm_90 PTX: plain cp.async.cg / .ca), and without this the streamed
        statistics evict the scores: H100, batch 80, 32K, score alone 0.2697 ms vs score + top-k 0.3053
        (bf16, cp.async) against 0.2615 / 0.2666 (fp8 FMA, plain loads with evict_first).
    prefilter: the whole-row top-k (not the split-filter path) by `_prefilter_select`: two streaming passes
        over the stored row (interleaved group maxima -> a lower bound of the k-th score; the pages above it
        appended as candidates), then the k-th and the compaction over <= 16 * next_pow2(k) candidates, in
        4-warp programs (k <= 512; where more pages survive, the radix passes). Off: the single-read
        bisection holds a row of up to `single_read_max` pages in registers (16 warps and one program per SM
        at 16K pages).
    fp8_f16: TC scoring of one-byte means (e4m3 or int8 codes) widens the codes to fp16 (e4m3: one
        F2FP.F16.E4M3.UNPACK_B per pair of codes) instead of bf16 (e4m3 -> f16 -> bf16: a further 64
        F2F.BF16.F16 and 32 PRMT per 64-page tile and thread), and multiplies them with fp16 hi + lo parts of
        q scaled by a power of two into fp16's range (22 bits of each element kept, bf16 hi + lo: 16).
        Offline sm_90 build of the split scoring kernel: 450 instead of 522 SASS instructions in the loop
        body. Off: with e4m3 codes it gained nothing on an H100 (BENCHMARKS.md, "fp16 products": the scoring
        pass 6 % faster, the step 1-2 % slower); with int8 codes 1-1.5 % faster steps at batch 80 (0.2985 vs
        0.3030 ms at 32K, 0.9253 vs 0.9344 at 128K, H100, benchmarks/kernels_h100_variants_refine.json), within
        what 3 rounds resolve, and the int8 step stays behind e4m3's either way (0.2773 / 0.8260 ms).
    int8_mma: TC scoring of int8 codes (scores that read the mean and no sigma: unique, mean; D >= 32) on the
        integer tensor cores: the codes enter the product as they are stored (no widening: the conversions are most of
        the per-tile instructions of coded means, see fp8_f16), against q split into three int8 parts scaled
        by a power of two (q * 2^e = p0 + p1 / 2^7 + p2 / 2^14, max |q * 2^e| over the KV head's G query heads
        in [64, 128): 20 bits kept, relative to the group's largest element); three int8 products with exact
        int32 sums (|sum| <= 127 * 127 * D), combined in fp32. Offline sm_90 build of the split scoring kernel:
        226 SASS instructions a 64-page tile (12 IGMMA), against 450 (16 HGMMA, 144 PRMT) with the codes widened
        to bf16. None: on where eligible (with 1 pipeline stage, as bf16 TC) unless fp8_f16 is set. H100 (sweep_launch.py, int8 codes,
        score + top-k against the widened bf16 products of the previous default): 0.0566 vs 0.0691 ms at batch 16
        / 30K, 0.1952 vs 0.2390 at batch 80 / 32K, 0.0355 vs 0.0389 at batch 4 / 30K (3 stages: 0.0668 / 0.2116
        / 0.0380); every launch selected the default's pages.
    kth_bits: bits of the k-th key decided per block-wide count in the prefilter's select over its
        candidates (1: 32 dependent reductions; 2: 16 tuple reductions of three counts each; 8: 4 radix
        passes, a `tl.histogram` of 256 bins each, as `split_radix` below). The split
        filter, its merge and the single read keep 1 bit a step: with 2 bits there, batch 1 / 128K score +
        top-k went 0.0395 -> 0.0703 ms (H100, benchmarks/kernels_h100_issue12_prefilter.json: the merge
        over 4096 candidates and the 256-key filters; not profiled).
    score_maxnreg: register cap per thread of the split scoring and filter kernels (ptxas .maxnreg). Registers set
        how many 4-warp programs share an SM, and so the bytes in flight a latency-bound scoring pass has (Nsight
        Compute, H100, benchmarks/ncu_h100_select_s12/: int8 codes at head_dim 128 / 64 with 70 / 61 registers, 7 /
        8 programs per SM, long-scoreboard stalls first). Offline sm_90 build, 1 stage: int8 codes at head_dim 64
        fit 48 registers without spills (10 programs per SM); at 128, 64 registers spill 8 bytes. Not applied where
        scoring is fused into the select kernel (splits = 1). None: 48 on the split scoring kernel for int8 codes on
        the integer tensor cores at head_dim <= 64, else no cap (the filter kernel is not capped by default: not
        measured there); 0: no cap. H100 (sweep_launch.py, benchmarks/sweep_h100_*_s13.json, every cap selected the
        default's pages): int8 score + top-k at batch 80 / 32K, head_dim 64: 0.1428 vs 0.1509 ms (0.946; 40
        registers 0.986, 56 0.994); at head_dim 128 a cap helps little or loses (48: 0.984 at batch 80, 1.037 at
        batch 16 / 30K), and with bf16 means it loses everywhere (48: 0.989 at head_dim 64, 1.60-1.90 at 128).
    split_radix: the split filter's local k-th (over its `filter_split` in-register keys) and the merge's
        k-th (over n_splits * k in-register candidates) by 4 radix passes of 8 bits (`tl.histogram` of the
        keys in registers, the digit from a 256-bin suffix count) instead of the 32-step bisection (32
        dependent block-wide counts): 4 histograms + 4 small scans on the critical path of batch 1 (the
        merge was 15.1 of the 0.047 ms step at 128K on an H100, ncu). Off until timed on a GPU.
    merge_bound: the merge first bounds the k-th candidate from below as the prefilter does (group maxima
        over the in-register candidates), writes back the few at or above it, and selects among those
        (2-bit steps over <= 16 * next_pow2(k) slots: 16 dependent reductions instead of 32 over all
        n_splits * k). Off until timed on a GPU.
    """

    block_p: int = 64
    block_r: int | None = None
    select_warps: int | None = None
    pages_per_program: int = 256
    programs_per_sm: int = 4
    prefetch: bool = True
    score_warps: int = 4
    score_stages: int | None = None
    single_read_max: int = 16384
    single_read_warps: int | None = None
    filter_split: int | None = None
    fma: bool | None = None
    tc: bool | None = None
    scores_l2: bool = True
    prefilter: bool = True
    kth_bits: int = 2
    fp8_f16: bool = False
    int8_mma: bool | None = None
    score_maxnreg: int | None = None
    split_radix: bool = False
    merge_bound: bool = False

    def __post_init__(self) -> None:
        f = self.filter_split
        if f is not None and f != 0 and not (16 <= f <= 4096 and f & (f - 1) == 0):
            raise ValueError(f"filter_split must be 0, None or a power of two in [16, 4096], got {f}")
        if self.kth_bits not in (1, 2, 8):
            raise ValueError(f"kth_bits must be 1, 2 or 8, got {self.kth_bits!r}")
        if not 0 <= self.single_read_max <= MAX_SINGLE_READ:
            raise ValueError(f"single_read_max must be in [0, {MAX_SINGLE_READ}], got {self.single_read_max}")
        if self.score_maxnreg not in (None, 0) and not 24 <= self.score_maxnreg <= 255:
            raise ValueError(f"score_maxnreg must be None, 0 or in [24, 255], got {self.score_maxnreg!r}")
        r = self.block_r
        if r is not None and not (16 <= r <= MAX_BLOCK_R and r & (r - 1) == 0):
            raise ValueError(f"block_r must be a power of two in [16, {MAX_BLOCK_R}], got {self.block_r}")


@triton.jit
def _score_block(q, qabs, qnorm, gmask, q1h, q1l, q2h, q2l, qinv, phys, pmask, h, mean_ptr, std_ptr,
                 sigma_ptr, kmin_ptr, kmax_ptr, scale_ptr, lam, offs_d, dmask, q_row, stride_qh,
                 HKV: tl.constexpr, D: tl.constexpr, MODE: tl.constexpr, PREC: tl.constexpr,
                 HAS_SCALE: tl.constexpr, G: tl.constexpr, FMA: tl.constexpr, TC: tl.constexpr):
    """fp32 [BLOCK_P] group-max scores of physical pages `phys` (q, |q|: fp32 [GP, BLOCK_D]).

    Half-precision and fp8 stats are widened to fp32 and multiplied in tf32 (exact for bf16/fp16/fp8
    values; q is rounded to tf32), fp32 stats in full IEEE precision (PREC). HAS_SCALE: the means are fp8
    codes, mu = code * scale[page, head] (the scale multiplies the page's dot product).
    FMA: no tensor-core dot: each of the G query rows (re-read from q_row, L1-resident) multiplies the tile
    in fp32 registers and reduces over D (no shared-memory staging of a widened tile, no padding of G to
    16 rows); full fp32 precision. TC (1; coded means in fp16 products 3, int8 codes in int8 products 5;
    2 / 4 / 6 under the CPU interpreter): see `_score_block_tc` (q1h.. are its query operands, qinv their
    scale's inverse)."""
    phys = phys.to(tl.int64)
    # per-head statistics are read once: evict them first so L2 keeps the page table, std and scores
    base = (phys * HKV + h)[:, None] * D + offs_d[None, :]
    lmask = pmask[:, None] & dmask[None, :]
    if TC > 0:
        return _score_block_tc(q1h, q1l, q2h, q2l, qinv, qnorm, gmask, phys, pmask, h, mean_ptr, std_ptr,
                               sigma_ptr, kmin_ptr, kmax_ptr, scale_ptr, lam, base, lmask, HKV, MODE, HAS_SCALE,
                               TC % 2 == 0, (TC + 1) // 2 - 1)
    if FMA:
        return _score_block_fma(phys, pmask, h, mean_ptr, std_ptr, sigma_ptr, kmin_ptr, kmax_ptr, scale_ptr,
                                lam, offs_d, dmask, base, lmask, q_row, stride_qh, HKV, MODE, HAS_SCALE, G)
    if MODE == 3:
        lo = tl.load(kmin_ptr + base, mask=lmask, other=0.0, eviction_policy="evict_first").to(tl.float32)
        hi = tl.load(kmax_ptr + base, mask=lmask, other=0.0, eviction_policy="evict_first").to(tl.float32)
        # sum_d max(q_d lo_d, q_d hi_d) = q·centre + |q|·radius
        s = tl.dot(q, tl.trans((lo + hi) * 0.5), input_precision=PREC)
        s += tl.dot(qabs, tl.trans((hi - lo) * 0.5), input_precision=PREC)
    else:
        mu = tl.load(mean_ptr + base, mask=lmask, other=0.0, eviction_policy="evict_first").to(tl.float32)
        s = tl.dot(q, tl.trans(mu), input_precision=PREC)
        if HAS_SCALE:
            s *= tl.load(scale_ptr + phys * HKV + h, mask=pmask, other=0.0)[None, :]
        if MODE == 0:
            sd = tl.load(std_ptr + phys * HKV + h, mask=pmask, other=0.0)
            s += lam * qnorm[:, None] * sd[None, :]
        if MODE == 2:
            sg = tl.load(sigma_ptr + base, mask=lmask, other=0.0, eviction_policy="evict_first")
            sg = sg.to(tl.float32)
            s += lam * tl.dot(qabs, tl.trans(sg), input_precision=PREC)
    s = tl.where(gmask[:, None], s, float("-inf"))
    return tl.max(s, axis=0)


@triton.jit
def _mma(a, b, acc, WIDEN: tl.constexpr):
    """a @ b (+ acc) in fp32. WIDEN (Triton's CPU interpreter only, whose bf16 dot is wrong in 3.6): both
    bf16 operands widened to fp32 and multiplied in IEEE fp32, the same value (bf16 x bf16 products are
    exact in fp32); on the GPU the bf16 tensor-core product."""
    if WIDEN:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc)


@triton.jit
def _imma(a, b, WIDEN: tl.constexpr):
    """a @ b of int8 operands as fp32: the exact int32 sums of the integer tensor cores; WIDEN (the CPU
    interpreter) the same integers multiplied in IEEE fp32 (exact while |sum| < 2^24: 127 * 127 * D is)."""
    if WIDEN:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b, out_dtype=tl.int32).to(tl.float32)


@triton.jit
def _score_block_tc(q1h, q1l, q2h, q2l, qinv, qnorm, gmask, phys, pmask, h, mean_ptr, std_ptr, sigma_ptr,
                    kmin_ptr, kmax_ptr, scale_ptr, lam, base, lmask, HKV: tl.constexpr, MODE: tl.constexpr,
                    HAS_SCALE: tl.constexpr, WIDEN: tl.constexpr, QFORM: tl.constexpr):
    """`_score_block` with the statistics tile [BLOCK_P, BLOCK_D] as the left operand of bf16 products
    (fp32 accumulation) against [BLOCK_D, GP] query operands split as hi + lo: q1 = q (quest: min(q, 0)),
    q2 = |q| (quest: max(q, 0)). QFORM (`_load_query`) 1, coded means: the e4m3 / int8 codes widened to fp16
    (one conversion per pair of codes, exact) and multiplied with q1 scaled by a power of two into fp16's
    range (q1h, q1l fp16; the product times qinv undoes it, exactly). QFORM 2, int8 codes (unique / mean):
    the codes as stored times the int8 parts q1h, q1l, q2h of q1 * 2^e (three int8 products, exact int32
    sums), combined as p0 + p1 / 2^7 + p2 / 2^14 in fp32, times qinv = 2^-e. fp32 [BLOCK_P] group-max
    scores."""
    if MODE == 3:
        lo = tl.load(kmin_ptr + base, mask=lmask, other=0.0, eviction_policy="evict_first")
        hi = tl.load(kmax_ptr + base, mask=lmask, other=0.0, eviction_policy="evict_first")
        # sum_d max(q_d lo_d, q_d hi_d) = lo·min(q, 0) + hi·max(q, 0)   (lo <= hi)
        s = _mma(lo, q1h, None, WIDEN)
        s = _mma(lo, q1l, s, WIDEN)
        s = _mma(hi, q2h, s, WIDEN)
        s = _mma(hi, q2l, s, WIDEN)
    else:
        mu = tl.load(mean_ptr + base, mask=lmask, other=0.0, eviction_policy="evict_first")
        if QFORM == 2:
            s = _imma(mu, q1h, WIDEN) + _imma(mu, q1l, WIDEN) * (1.0 / 128) + _imma(mu, q2h, WIDEN) * (1.0 / 16384)
            s *= qinv
        else:
            if HAS_SCALE:
                if WIDEN:  # the interpreter: _mma multiplies in fp32 anyway (and its int8 -> bf16 cast is wrong)
                    mu = mu.to(tl.float32)
                elif QFORM == 1:
                    mu = mu.to(tl.float16)  # e4m3 and int8 codes are exact in fp16 (and in bf16)
                else:
                    mu = mu.to(tl.bfloat16)
            s = _mma(mu, q1h, None, WIDEN)
            s = _mma(mu, q1l, s, WIDEN)
        if HAS_SCALE:
            sc = tl.load(scale_ptr + phys * HKV + h, mask=pmask, other=0.0)
            if QFORM == 1:
                sc = sc * qinv
            s *= sc[:, None]
        if MODE == 0:
            sd = tl.load(std_ptr + phys * HKV + h, mask=pmask, other=0.0)
            s += lam * sd[:, None] * qnorm[None, :]
        if MODE == 2:
            sg = tl.load(sigma_ptr + base, mask=lmask, other=0.0, eviction_policy="evict_first")
            t = _mma(sg, q2h, None, WIDEN)
            t = _mma(sg, q2l, t, WIDEN)
            s += lam * t
    s = tl.where(gmask[None, :], s, float("-inf"))
    return tl.max(s, axis=1)


@triton.jit
def _score_block_fma(phys, pmask, h, mean_ptr, std_ptr, sigma_ptr, kmin_ptr, kmax_ptr, scale_ptr, lam, offs_d,
                     dmask, base, lmask, q_row, stride_qh, HKV: tl.constexpr, MODE: tl.constexpr,
                     HAS_SCALE: tl.constexpr, G: tl.constexpr):
    """`_score_block` without tl.dot (see FMA there): fp32 [BLOCK_P] group-max scores."""
    if MODE == 3:
        lo = tl.load(kmin_ptr + base, mask=lmask, other=0.0, eviction_policy="evict_first").to(tl.float32)
        hi = tl.load(kmax_ptr + base, mask=lmask, other=0.0, eviction_policy="evict_first").to(tl.float32)
    else:
        mu = tl.load(mean_ptr + base, mask=lmask, other=0.0, eviction_policy="evict_first").to(tl.float32)
        if HAS_SCALE:
            sc = tl.load(scale_ptr + phys * HKV + h, mask=pmask, other=0.0)
        if MODE == 0:
            sd = tl.load(std_ptr + phys * HKV + h, mask=pmask, other=0.0)
        if MODE == 2:
            sg = tl.load(sigma_ptr + base, mask=lmask, other=0.0, eviction_policy="evict_first").to(tl.float32)
    best = tl.full(pmask.shape, float("-inf"), tl.float32)
    for g in tl.static_range(G):
        qg = tl.load(q_row + g * stride_qh + offs_d, mask=dmask, other=0.0).to(tl.float32)
        if MODE == 3:
            s = tl.sum(tl.maximum(qg[None, :] * lo, qg[None, :] * hi), axis=1)
        else:
            s = tl.sum(mu * qg[None, :], axis=1)
            if HAS_SCALE:
                s = s * sc
            if MODE == 0:
                s += lam * tl.sqrt(tl.sum(qg * qg, axis=0)) * sd
            if MODE == 2:
                s += lam * tl.sum(sg * tl.abs(qg)[None, :], axis=1)
        best = tl.maximum(best, s)
    return best


@triton.jit
def _page_ids(table_row, offs, stop, ahead, BLOCK_P: tl.constexpr, PREFETCH: tl.constexpr):
    """(physical ids of logical pages `offs`, ids of the next tile when PREFETCH). With PREFETCH, `ahead`
    holds this tile's ids, loaded one step earlier, so the statistics gather starts at once."""
    if PREFETCH:
        return ahead, tl.load(table_row + offs + BLOCK_P, mask=offs + BLOCK_P < stop, other=0)
    else:
        return tl.load(table_row + offs, mask=offs < stop, other=0), ahead


@triton.jit
def _pow2_scaled(x, TOP: tl.constexpr):
    """(x * 2^e, 2^-e), e = TOP - floor(log2(max |x|)) (clamped to fp32's normal range), so the largest
    element lands in [2^TOP, 2^(TOP + 1)); both products by a power of two are exact."""
    amax = tl.max(tl.max(tl.abs(x), axis=1), axis=0)
    e = TOP - (((amax.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127)
    e = tl.minimum(tl.maximum(e, -126), 126)
    return x * ((127 + e) << 23).to(tl.float32, bitcast=True), ((127 - e) << 23).to(tl.float32, bitcast=True)


@triton.jit
def _load_query(q_ptr, b, h, stride_qb, stride_qh,
                G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, BLOCK_D: tl.constexpr, MODE: tl.constexpr,
                QFORM: tl.constexpr):
    """The G query heads of KV head h: q, |q| fp32 [GP, BLOCK_D], ||q|| fp32 [GP], row mask [GP], the
    bf16 operands [BLOCK_D, GP] of the TC scoring: q1 = q (quest: min(q, 0)) and q2 = |q| (quest:
    max(q, 0)), each as hi + lo (hi = bf16(x), lo = bf16(x - hi)), and qinv (1.0). QFORM 1 (coded means,
    SelectConfig.fp8_f16): q1 instead as fp16 hi + lo of q1 * 2^e, e setting max |q1| in [2^14, 2^15) (below
    fp16's 65504; hi + lo keep 22 bits of each element), and qinv = 2^-e. QFORM 2 (int8 codes,
    SelectConfig.int8_mma): q1h, q1l, q2h are the int8 parts p0, p1, p2 of x = q1 * 2^e, e setting max |x|
    over the group in [64, 128) (one e for the G heads: a per-head e cost 427 more SASS instructions in the
    prologue of the offline sm_90 build, against 226 in the loop over one 64-page tile): p0 = round(x)
    (clamped to 127), p1 = round((x - p0) * 2^7), p2 = round(((x - p0) * 2^7 - p1) * 2^7), round(y) =
    floor(y + 0.5) (each residual <= 1 before its 2^7, so every part fits int8); q2l unused; qinv = 2^-e."""
    offs_g = tl.arange(0, GP)
    offs_d = tl.arange(0, BLOCK_D)
    gmask = offs_g < G
    qf = tl.load(q_ptr + b * stride_qb + (h * G + offs_g)[:, None] * stride_qh + offs_d[None, :],
                 mask=gmask[:, None] & (offs_d < D)[None, :], other=0.0).to(tl.float32)
    qabs = tl.abs(qf)
    if MODE == 3:
        q1 = tl.minimum(qf, 0.0)
        q2 = tl.maximum(qf, 0.0)
    else:
        q1 = qf
        q2 = qabs
    if QFORM == 2:
        x, qinv = _pow2_scaled(q1, 6)
        p0 = tl.minimum(tl.maximum(tl.floor(x + 0.5), -127.0), 127.0)
        r = (x - p0) * 128.0
        p1 = tl.minimum(tl.maximum(tl.floor(r + 0.5), -127.0), 127.0)
        p2 = tl.minimum(tl.maximum(tl.floor((r - p1) * 128.0 + 0.5), -127.0), 127.0)
        q1h = p0.to(tl.int8)
        q1l = p1.to(tl.int8)
        q2h = p2.to(tl.int8)
        q2l = q2h
    else:
        if QFORM == 1:
            q1, qinv = _pow2_scaled(q1, 14)
            q1h = q1.to(tl.float16)
            q1l = (q1 - q1h.to(tl.float32)).to(tl.float16)
        else:
            qinv = tl.full((), 1.0, tl.float32)
            q1h = q1.to(tl.bfloat16)
            q1l = (q1 - q1h.to(tl.float32)).to(tl.bfloat16)
        q2h = q2.to(tl.bfloat16)
        q2l = (q2 - q2h.to(tl.float32)).to(tl.bfloat16)
    return (qf, qabs, tl.sqrt(tl.sum(qf * qf, axis=1)), gmask,
            tl.trans(q1h), tl.trans(q1l), tl.trans(q2h), tl.trans(q2l), qinv)


@triton.jit
def _score_range(q_ptr, stride_qb, stride_qh, b, h, table_ptr, max_pages, start, stop, n_pages, mean_ptr,
                 std_ptr, sigma_ptr, kmin_ptr, kmax_ptr, scale_ptr, scores_ptr, row, lam,
                 HKV: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, BLOCK_D: tl.constexpr,
                 BLOCK_P: tl.constexpr, MODE: tl.constexpr, PREC: tl.constexpr, PREFETCH: tl.constexpr,
                 KEEP_FIRST: tl.constexpr, KEEP_LAST: tl.constexpr, HIST: tl.constexpr, HAS_SCALE: tl.constexpr,
                 FMA: tl.constexpr, TC: tl.constexpr, SCORES_L2: tl.constexpr):
    """Score logical pages [start, stop) of row b (KV head h) and store them at scores[row + page]; with
    HIST (fused radix pass 0) returns the top-digit histogram of their keys (else zeros). The one scoring
    loop of the split, filter and fused select kernels."""
    q, qabs, qnorm, gmask, q1h, q1l, q2h, q2l, qinv = _load_query(q_ptr, b, h, stride_qb, stride_qh, G, GP, D,
                                                                  BLOCK_D, MODE, (TC + 1) // 2 - 1)
    offs_d = tl.arange(0, BLOCK_D)
    hist = tl.zeros([256], dtype=tl.int32)
    table_row = table_ptr + b * max_pages
    q_row = q_ptr + b * stride_qb + h * G * stride_qh
    ahead = tl.load(table_row + start + tl.arange(0, BLOCK_P), mask=start + tl.arange(0, BLOCK_P) < stop,
                    other=0)
    for p0 in range(start, stop, BLOCK_P):
        offs = p0 + tl.arange(0, BLOCK_P)
        pmask = offs < stop
        phys, ahead = _page_ids(table_row, offs, stop, ahead, BLOCK_P, PREFETCH)
        s = _score_block(q, qabs, qnorm, gmask, q1h, q1l, q2h, q2l, qinv, phys, pmask, h, mean_ptr, std_ptr,
                         sigma_ptr, kmin_ptr, kmax_ptr, scale_ptr, lam, offs_d, offs_d < D, q_row, stride_qh,
                         HKV, D, MODE, PREC, HAS_SCALE, G, FMA, TC)
        if SCORES_L2:
            tl.store(scores_ptr + row + offs, s, mask=pmask, eviction_policy="evict_last")
        else:
            tl.store(scores_ptr + row + offs, s, mask=pmask)
        if HIST:
            hist += _digit_hist(_sort_key(s, offs, n_pages, KEEP_FIRST, KEEP_LAST), pmask, 0, 0)
    return hist


@triton.jit
def _score_kernel(q_ptr, stride_qb, stride_qh, table_ptr, lengths_ptr, max_pages, mean_ptr, std_ptr,
                  sigma_ptr, kmin_ptr, kmax_ptr, scale_ptr, scores_ptr, lam, K, pages_per_split,
                  HKV: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr,
                  BLOCK_D: tl.constexpr, S: tl.constexpr, BLOCK_P: tl.constexpr, MODE: tl.constexpr,
                  PREC: tl.constexpr, PREFETCH: tl.constexpr, HAS_SCALE: tl.constexpr, FMA: tl.constexpr,
                  TC: tl.constexpr, FILL: tl.constexpr, SCORES_L2: tl.constexpr, PDL: tl.constexpr = False):
    """Split-K scoring: program (b*HKV + h, split) scores its range of pages into scores[b, h, :]. FILL
    (`score_pages`): every row is scored and the split's unheld table columns are set to -inf."""
    pdl_enter(PDL)
    bh = tl.program_id(0)
    b = bh // HKV
    h = bh % HKV
    n_pages = tl.minimum(tl.cdiv(tl.load(lengths_ptr + b), S), max_pages)  # never past the table row
    start = tl.program_id(1) * pages_per_split
    stop = tl.minimum(start + pages_per_split, n_pages)
    row = bh.to(tl.int64) * max_pages
    if FILL:
        for p0 in range(tl.maximum(start, n_pages), tl.minimum(start + pages_per_split, max_pages), BLOCK_P):
            offs = p0 + tl.arange(0, BLOCK_P)
            tl.store(scores_ptr + row + offs, tl.full([BLOCK_P], float("-inf"), tl.float32),
                     mask=offs < tl.minimum(start + pages_per_split, max_pages))
    else:
        stop = tl.where(n_pages > K, stop, 0)  # sequences that fit the budget are not scored
    _score_range(q_ptr, stride_qb, stride_qh, b, h, table_ptr, max_pages, start, stop, n_pages, mean_ptr,
                 std_ptr, sigma_ptr, kmin_ptr, kmax_ptr, scale_ptr, scores_ptr, row, lam, HKV, G, GP, D,
                 BLOCK_D, BLOCK_P, MODE, PREC, PREFETCH, False, False, False, HAS_SCALE, FMA, TC, SCORES_L2)


@triton.jit
def _order_key(s):
    """uint32 keys ordered like the fp32 scores s (every key >= 1, so 0 can mark an empty slot)."""
    bits = s.to(tl.uint32, bitcast=True)
    return tl.where((bits >> 31) != 0, bits ^ 0xFFFFFFFF, bits | 0x80000000)


@triton.jit
def _sort_key(s, offs, n_pages, KEEP_FIRST: tl.constexpr, KEEP_LAST: tl.constexpr):
    """uint32 keys ordered like the fp32 scores; forced pages score +inf."""
    if KEEP_FIRST:
        s = tl.where(offs == 0, float("inf"), s)
    if KEEP_LAST:
        s = tl.where(offs == n_pages - 1, float("inf"), s)
    return _order_key(s)


@triton.jit
def _pick_bucket(hist, k_rem):
    """Highest 8-bit digit whose suffix count reaches k_rem; returns (digit, k_rem minus the keys above)."""
    digits = tl.arange(0, 256)
    at_least = tl.sum(hist, axis=0) - tl.cumsum(hist, axis=0) + hist
    digit = tl.max(tl.where(at_least >= k_rem, digits, -1), axis=0)
    above = tl.sum(tl.where(digits > digit, hist, 0), axis=0)
    return digit, k_rem - above


@triton.jit
def _digit_hist(key, pmask, prefix, R: tl.constexpr):
    """int32 [256] histogram of digit R (8 bits, most significant first) of the keys matching `prefix`."""
    if R == 0:
        digit = key >> 24
        match = pmask
    else:
        digit = (key >> (24 - 8 * R)) & 255
        match = pmask & ((key >> (32 - 8 * R)) == prefix)
    return tl.histogram(digit.to(tl.int32), 256, mask=match)


@triton.jit
def _scan_hist(scores_ptr, row, n_pages, prefix, R: tl.constexpr, BLOCK_R: tl.constexpr,
               KEEP_FIRST: tl.constexpr, KEEP_LAST: tl.constexpr):
    """Radix pass R over the row's stored scores."""
    hist = tl.zeros([256], dtype=tl.int32)
    for p0 in range(0, n_pages, BLOCK_R):
        offs = p0 + tl.arange(0, BLOCK_R)
        pmask = offs < n_pages
        s = tl.load(scores_ptr + row + offs, mask=pmask, other=0.0)
        hist += _digit_hist(_sort_key(s, offs, n_pages, KEEP_FIRST, KEEP_LAST), pmask, prefix, R)
    return hist


@triton.jit
def _compact(scores_ptr, row, table_ptr, b, max_pages, n_pages, out_row, thresh, n_ties,
             BLOCK_R: tl.constexpr, KEEP_FIRST: tl.constexpr, KEEP_LAST: tl.constexpr):
    """Write the pages whose key beats `thresh`, and the first `n_ties` equal to it, in logical order: a
    winner's slot is (keys above thresh before it) + min(keys equal before it, n_ties), both prefix counts
    from one scan of (eq << 16) + gt (BLOCK_R <= 16384 keeps each below 2^16)."""
    n_gt = 0
    n_eq = 0
    for p0 in range(0, n_pages, BLOCK_R):
        offs = p0 + tl.arange(0, BLOCK_R)
        pmask = offs < n_pages
        key = _sort_key(tl.load(scores_ptr + row + offs, mask=pmask, other=0.0), offs, n_pages,
                        KEEP_FIRST, KEEP_LAST)
        packed = (pmask & (key == thresh)).to(tl.int32) * 65536 + (pmask & (key > thresh)).to(tl.int32)
        before = tl.cumsum(packed, axis=0) - packed
        eq_before = n_eq + (before >> 16)
        sel = ((packed & 65535) != 0) | ((packed >= 65536) & (eq_before < n_ties))
        ids = tl.load(table_ptr + b * max_pages + offs, mask=sel, other=-1)
        tl.store(out_row + n_gt + (before & 65535) + tl.minimum(eq_before, n_ties), ids, mask=sel)
        total = tl.sum(packed, axis=0)
        n_gt += total & 65535
        n_eq += total >> 16


@triton.jit
def _threshold_once(scores_ptr, row, n_pages, K, ROW: tl.constexpr,
                    KEEP_FIRST: tl.constexpr, KEEP_LAST: tl.constexpr):
    """(K-th largest key t, K - count(key > t)) of the row's n_pages (K < n_pages <= ROW) stored scores,
    read once: t is built bit by bit, most significant first; a bit stays set when at least K keys are
    >= the candidate (a count over the in-register row, no memory traffic)."""
    offs = tl.arange(0, ROW)
    pmask = offs < n_pages
    s = tl.load(scores_ptr + row + offs, mask=pmask, other=0.0)
    # unheld slots get key 0, below every candidate (>= 1) the bisection counts
    return _kth_key(tl.where(pmask, _sort_key(s, offs, n_pages, KEEP_FIRST, KEEP_LAST), 0), K)


@triton.jit
def _add3(a0, a1, a2, b0, b1, b2):
    return a0 + b0, a1 + b1, a2 + b2


@triton.jit
def _kth_key_radix(key, valid, K):
    """`_kth_key` by 4 radix passes of 8 bits over the in-register keys (no memory traffic): each pass one
    `tl.histogram` of the digit among the keys that match the prefix so far, and the highest digit whose
    suffix count reaches the rank still wanted (`_pick_bucket`). Returns the same (t, K - count(key > t)).
    At least K keys must be valid."""
    hist = _digit_hist(key, valid, 0, 0)
    digit, k_rem = _pick_bucket(hist, K)
    prefix = digit.to(tl.uint32)
    for r in tl.static_range(1, 4):
        hist = _digit_hist(key, valid, prefix, r)
        digit, k_rem = _pick_bucket(hist, k_rem)
        prefix = (prefix << 8) | digit.to(tl.uint32)
    return prefix, k_rem


@triton.jit
def _kth_key(key, K, BITS: tl.constexpr = 1):
    """(K-th largest of the in-register keys t, K - count(key > t)); key 0 marks empty slots, and at
    least K keys must be set. t is built most significant bits first: BITS = 1, one bit a step (a bit
    stays set when at least K keys are >= the candidate: 32 block-wide counts in a row); BITS = 2, two bits
    a step from the three counts of t | 01, t | 10, t | 11 in one reduction (16 dependent block-wide
    reductions instead of 32, for small candidate sets; on 4096 in-register keys a thread's 3 counts over 32
    keys cost more than the saved reductions: see SelectConfig.kth_bits). On the GPU the three counts are one
    tuple reduction (as measured). Under the CPU interpreter they are one int64 sum, packed 21 bits apart
    (each count <= the keys held < 2^21: the same integers): the interpreter's tuple reduce calls the combine
    function per element in Python (~0.15 s a reduction, 12 of the 13 s of a small select test under load;
    tests/kernels/test_select_pages.py 1170 -> 206 s). The offline sm_90 build test compiles the GPU form.
    BITS = 8: 4 radix passes (`_kth_key_radix`, SelectConfig.split_radix). The 16 2-bit steps stay unrolled: as
    a loop (tried: the offline sm_90 build 8 080 -> 5 720 SASS instructions at batch 80, against Nsight Compute's
    instruction-fetch stalls at batch 16) the select timed within 1.3 % of this form at every shape (H100,
    benchmarks/sweep_h100_*_s13.json), so the loop was removed."""
    if BITS == 8:
        t, n_ties = _kth_key_radix(key, key != 0, K)
    else:
        t = tl.zeros((), dtype=tl.uint32)
        if BITS == 1:
            bit = tl.full((), 0x80000000, dtype=tl.uint32)
            for _ in range(32):
                cand = t | bit
                t = tl.where(tl.sum((key >= cand).to(tl.int32), axis=0) >= K, cand, t)
                bit = bit >> 1
        else:
            for i in tl.static_range(16):
                t = _kth_2bits(key, K, t, i)
        n_ties = K - tl.sum((key > t).to(tl.int32), axis=0)
    return t, n_ties


@triton.jit
def _kth_2bits(key, K, t, i):
    """Step i of `_kth_key`'s 2-bit form: bits 31 - 2i and 30 - 2i of the K-th largest key, from the counts of
    keys >= t | 01, t | 10, t | 11 at those bits (one reduction of three counts)."""
    b1 = tl.full((), 1, dtype=tl.uint32) << (30 - 2 * i)
    c1 = (key >= (t | b1)).to(tl.int32)
    c2 = (key >= (t | (b1 * 2))).to(tl.int32)
    c3 = (key >= (t | (b1 * 3))).to(tl.int32)
    if _INTERPRETED:
        packed = c1.to(tl.int64) + (c2.to(tl.int64) << 21) + (c3.to(tl.int64) << 42)
        total = tl.sum(packed, axis=0)
        n1, n2, n3 = total & 0x1FFFFF, (total >> 21) & 0x1FFFFF, total >> 42
    else:
        n1, n2, n3 = tl.reduce((c1, c2, c3), 0, _add3)
    return t | (b1 * ((n1 >= K).to(tl.uint32) + (n2 >= K).to(tl.uint32) + (n3 >= K).to(tl.uint32)))


@triton.jit
def _prefilter_select(scores_ptr, row, table_ptr, b, max_pages, n_pages, out_row, cand_key_ptr, cand_idx_ptr,
                      cand_row, K, NG: tl.constexpr, CAP: tl.constexpr, BLOCK_R: tl.constexpr,
                      KEEP_FIRST: tl.constexpr, KEEP_LAST: tl.constexpr, KBITS: tl.constexpr):
    """Top-K of a stored row (n_pages > K) in two streaming passes and a small select; returns 1 when done,
    0 when more than CAP pages survive the filter (the caller then selects over the whole row).

    Pass 1: the maxima of NG >= K interleaved groups (logical page mod NG); their minimum `low` is a lower
    bound of the K-th largest key (each group holds a key >= low: at least NG >= K keys are). Pass 2:
    the pages with key >= low (about NG * ln(NG) of random scores: ~270 of 4K or 16K pages at K = 64) are
    appended in logical order to the row's candidate buffer. Then the K-th largest candidate (2-bit steps)
    and the compaction run over at most CAP in-register keys, not the whole row: no row held in registers,
    so 4-warp programs and several rows per SM."""
    gmax = tl.zeros([NG], dtype=tl.uint32)
    for p0 in range(0, n_pages, BLOCK_R):
        offs = p0 + tl.arange(0, BLOCK_R)
        pmask = offs < n_pages
        key = _sort_key(tl.load(scores_ptr + row + offs, mask=pmask, other=0.0), offs, n_pages,
                        KEEP_FIRST, KEEP_LAST)
        key = tl.where(pmask, key, 0)
        gmax = tl.maximum(gmax, tl.max(tl.reshape(key, [BLOCK_R // NG, NG]), axis=0))
    low = tl.min(gmax, axis=0)  # 0 when a group is empty (n_pages < NG): every held page survives
    n_c = tl.zeros((), dtype=tl.int32)
    for p0 in range(0, n_pages, BLOCK_R):
        offs = p0 + tl.arange(0, BLOCK_R)
        pmask = offs < n_pages
        key = _sort_key(tl.load(scores_ptr + row + offs, mask=pmask, other=0.0), offs, n_pages,
                        KEEP_FIRST, KEEP_LAST)
        surv = pmask & (key >= low)
        c = surv.to(tl.int32)
        slot = n_c + tl.cumsum(c, axis=0) - c
        keep = surv & (slot < CAP)
        tl.store(cand_key_ptr + cand_row + slot, key.to(tl.int32, bitcast=True), mask=keep)
        tl.store(cand_idx_ptr + cand_row + slot, offs, mask=keep)
        n_c += tl.sum(c, axis=0)
    done = n_c <= CAP
    if done:
        tl.debug_barrier()  # the candidates stored above are read by other threads of this program
        o = tl.arange(0, CAP)
        valid = o < n_c
        ck = tl.load(cand_key_ptr + cand_row + o, mask=valid, other=0).to(tl.uint32, bitcast=True)
        ci = tl.load(cand_idx_ptr + cand_row + o, mask=valid, other=0)
        ck = tl.where(valid, ck, 0)
        t, n_ties = _kth_key(ck, K, KBITS)
        sel, slot = _compact_slots(ck, valid, t, n_ties)
        ids = tl.load(table_ptr + b * max_pages + ci, mask=sel, other=-1)
        tl.store(out_row + slot, ids, mask=sel)
    return done


@triton.jit
def _radix_threshold(hist, scores_ptr, row, n_pages, K, BLOCK_R: tl.constexpr,
                     KEEP_FIRST: tl.constexpr, KEEP_LAST: tl.constexpr):
    """(K-th largest key, ties to take) by radix passes 1-3 over the stored row (pass 0's histogram given)."""
    digit, k_rem = _pick_bucket(hist, K)
    prefix = digit.to(tl.uint32)
    for r in tl.static_range(1, 4):
        hist = _scan_hist(scores_ptr, row, n_pages, prefix, r, BLOCK_R, KEEP_FIRST, KEEP_LAST)
        digit, k_rem = _pick_bucket(hist, k_rem)
        prefix = (prefix << 8) | digit.to(tl.uint32)
    return prefix, k_rem


@triton.jit
def _select_kernel(q_ptr, stride_qb, stride_qh, table_ptr, lengths_ptr, max_pages, mean_ptr, std_ptr,
                   sigma_ptr, kmin_ptr, kmax_ptr, scale_ptr, scores_ptr, out_ptr, cand_key_ptr, cand_idx_ptr,
                   lam, K, NG: tl.constexpr, CAP: tl.constexpr, KBITS: tl.constexpr,
                   HKV: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr,
                   BLOCK_D: tl.constexpr, S: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_R: tl.constexpr,
                   MODE: tl.constexpr, PREC: tl.constexpr, PREFETCH: tl.constexpr, FUSED: tl.constexpr,
                   KEEP_FIRST: tl.constexpr, KEEP_LAST: tl.constexpr, ROW: tl.constexpr,
                   HAS_SCALE: tl.constexpr, FMA: tl.constexpr, TC: tl.constexpr, SCORES_L2: tl.constexpr,
                   PDL: tl.constexpr = False):
    """Program b*HKV + h writes out[b, h, :K]: all held pages if they fit, else the top-K, by the
    prefilter (NG > 0: `_prefilter_select`, candidates cand_*[bh, :CAP]) or, where it is off or too many
    pages survive its filter, the single-read bisection (ROW > 0: the padded row) or the radix passes
    (ROW = 0)."""
    pdl_enter(PDL)
    bh = tl.program_id(0)
    b = bh // HKV
    h = bh % HKV
    n_pages = tl.minimum(tl.cdiv(tl.load(lengths_ptr + b), S), max_pages)  # never past the table row
    row = bh.to(tl.int64) * max_pages
    out_row = out_ptr + bh.to(tl.int64) * K
    if n_pages <= K:
        for p0 in range(0, K, BLOCK_P):
            offs = p0 + tl.arange(0, BLOCK_P)
            ids = tl.load(table_ptr + b * max_pages + offs, mask=offs < n_pages, other=-1)
            tl.store(out_row + offs, ids, mask=offs < K)
    else:
        if FUSED:
            hist = _score_range(q_ptr, stride_qb, stride_qh, b, h, table_ptr, max_pages, 0, n_pages, n_pages,
                                mean_ptr, std_ptr, sigma_ptr, kmin_ptr, kmax_ptr, scale_ptr, scores_ptr, row, lam,
                                HKV, G, GP, D, BLOCK_D, BLOCK_P, MODE, PREC, PREFETCH, KEEP_FIRST, KEEP_LAST,
                                (ROW == 0) and (NG == 0), HAS_SCALE, FMA, TC, SCORES_L2)
            tl.debug_barrier()  # the scores stored above are re-read by other threads of this program
        if NG > 0:
            done = _prefilter_select(scores_ptr, row, table_ptr, b, max_pages, n_pages, out_row, cand_key_ptr,
                                     cand_idx_ptr, bh.to(tl.int64) * CAP, K, NG, CAP, BLOCK_R, KEEP_FIRST,
                                     KEEP_LAST, KBITS)
        else:
            done = n_pages < 0
        if done == 0:
            if ROW > 0:
                thresh, n_ties = _threshold_once(scores_ptr, row, n_pages, K, ROW, KEEP_FIRST, KEEP_LAST)
            else:
                if (not FUSED) or (NG > 0):
                    hist = _scan_hist(scores_ptr, row, n_pages, 0, 0, BLOCK_R, KEEP_FIRST, KEEP_LAST)
                thresh, n_ties = _radix_threshold(hist, scores_ptr, row, n_pages, K, BLOCK_R,
                                                  KEEP_FIRST, KEEP_LAST)
            _compact(scores_ptr, row, table_ptr, b, max_pages, n_pages, out_row, thresh, n_ties,
                     BLOCK_R, KEEP_FIRST, KEEP_LAST)


@triton.jit
def _compact_slots(key, valid, t, n_ties):
    """(selected mask, output slot) of in-register keys: those above t, and the first n_ties equal to t, in
    order; both prefix counts from one scan of (eq << 16) + gt (at most 16384 keys keep each below 2^16)."""
    packed = (valid & (key == t)).to(tl.int32) * 65536 + (valid & (key > t)).to(tl.int32)
    before = tl.cumsum(packed, axis=0) - packed
    eq_before = before >> 16
    sel = ((packed & 65535) != 0) | ((packed >= 65536) & (eq_before < n_ties))
    return sel, (before & 65535) + tl.minimum(eq_before, n_ties)


@triton.jit
def _filter_kernel(q_ptr, stride_qb, stride_qh, table_ptr, lengths_ptr, max_pages, mean_ptr, std_ptr,
                   sigma_ptr, kmin_ptr, kmax_ptr, scale_ptr, scores_ptr, cand_key_ptr, cand_idx_ptr, lam, K,
                   n_splits,
                   HKV: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr,
                   BLOCK_D: tl.constexpr, S: tl.constexpr, BLOCK_P: tl.constexpr, SPLIT: tl.constexpr,
                   MODE: tl.constexpr, PREC: tl.constexpr, PREFETCH: tl.constexpr, HAS_SCALE: tl.constexpr,
                   KEEP_FIRST: tl.constexpr, KEEP_LAST: tl.constexpr, FMA: tl.constexpr, TC: tl.constexpr,
                   SCORES_L2: tl.constexpr, RADIX: tl.constexpr, PDL: tl.constexpr = False):
    """Program (b*HKV + h, split) scores logical pages [split*SPLIT, +SPLIT) of its row, then keeps only its
    local top-K (same order as the global one: key descending, lower logical page first) as candidates
    cand_key / cand_idx [bh, split, :K] in ascending logical order, -1 padded. Every global winner is
    among its split's local top-K, so the merge over the candidates selects exactly the global top-K.
    Rows holding <= K pages are skipped (the merge copies them whole)."""
    pdl_enter(PDL)
    bh = tl.program_id(0)
    sp = tl.program_id(1)
    b = bh // HKV
    h = bh % HKV
    n_pages = tl.minimum(tl.cdiv(tl.load(lengths_ptr + b), S), max_pages)
    if n_pages > K:
        start = sp * SPLIT
        stop = tl.minimum(start + SPLIT, n_pages)
        row = bh.to(tl.int64) * max_pages
        _score_range(q_ptr, stride_qb, stride_qh, b, h, table_ptr, max_pages, start, stop, n_pages, mean_ptr,
                     std_ptr, sigma_ptr, kmin_ptr, kmax_ptr, scale_ptr, scores_ptr, row, lam, HKV, G, GP, D,
                     BLOCK_D, BLOCK_P, MODE, PREC, PREFETCH, False, False, False, HAS_SCALE, FMA, TC, SCORES_L2)
        tl.debug_barrier()  # the split's scores stored above are re-read by other threads of this program
        offs = start + tl.arange(0, SPLIT)
        valid = offs < stop
        s = tl.load(scores_ptr + row + offs, mask=valid, other=0.0)
        key = tl.where(valid, _sort_key(s, offs, n_pages, KEEP_FIRST, KEEP_LAST), 0)
        n_in = tl.maximum(stop - start, 0)
        if n_in > K:
            t, n_ties = _kth_key(key, K, 8 if RADIX else 1)
        else:  # the whole split is a candidate
            t = tl.zeros((), dtype=tl.uint32)
            n_ties = tl.zeros((), dtype=tl.int32)
        sel, slot = _compact_slots(key, valid, t, n_ties)
        cand = bh.to(tl.int64) * n_splits * K + sp * K
        tl.store(cand_key_ptr + cand + slot, key.to(tl.int32, bitcast=True), mask=sel)
        tl.store(cand_idx_ptr + cand + slot, offs, mask=sel)
        n_sel = tl.minimum(n_in, K)
        for j0 in range(0, K, SPLIT):
            offs_j = j0 + tl.arange(0, SPLIT)
            tl.store(cand_idx_ptr + cand + offs_j, tl.full([SPLIT], -1, tl.int32),
                     mask=(offs_j < K) & (offs_j >= n_sel))


@triton.jit
def _merge_kernel(table_ptr, lengths_ptr, max_pages, cand_key_ptr, cand_idx_ptr, out_ptr, K, n_splits,
                  HKV: tl.constexpr, S: tl.constexpr, CAND: tl.constexpr, BLOCK_P: tl.constexpr,
                  RADIX: tl.constexpr, NG: tl.constexpr, CAP: tl.constexpr, PDL: tl.constexpr = False):
    """Program b*HKV + h writes out[b, h, :K]: all held pages if they fit, else the top-K of the row's
    n_splits * K candidates (one in-register row of CAND slots), in ascending logical order.

    NG > 0 (`SelectConfig.merge_bound`): first the prefilter's bound over the in-register candidates (the
    minimum of the maxima of NG >= K interleaved groups of slots is <= the K-th largest key); the
    candidates at or above it (at most CAP) are written back to the front of the row's buffer, in order,
    and the k-th (2-bit steps) and the compaction run over those CAP slots; where more survive, the
    whole-candidate select below."""
    pdl_enter(PDL)
    bh = tl.program_id(0)
    b = bh // HKV
    n_pages = tl.minimum(tl.cdiv(tl.load(lengths_ptr + b), S), max_pages)
    out_row = out_ptr + bh.to(tl.int64) * K
    if n_pages <= K:
        for p0 in range(0, K, BLOCK_P):
            offs = p0 + tl.arange(0, BLOCK_P)
            ids = tl.load(table_ptr + b * max_pages + offs, mask=offs < n_pages, other=-1)
            tl.store(out_row + offs, ids, mask=offs < K)
    else:
        offs = tl.arange(0, CAND)
        n_cand = n_splits * K
        base = bh.to(tl.int64) * n_cand
        idx = tl.load(cand_idx_ptr + base + offs, mask=offs < n_cand, other=-1)
        valid = idx >= 0
        key = tl.load(cand_key_ptr + base + offs, mask=valid, other=0).to(tl.uint32, bitcast=True)
        key = tl.where(valid, key, 0)
        done = n_pages < 0
        if NG > 0:
            low = tl.min(tl.max(tl.reshape(key, [CAND // NG, NG]), axis=0), axis=0)
            surv = valid & (key >= low)
            c = surv.to(tl.int32)
            pos = tl.cumsum(c, axis=0) - c
            n_s = tl.sum(c, axis=0)
            done = n_s <= CAP
            if done:
                tl.debug_barrier()  # every thread holds its candidates before the buffer's front is rewritten
                tl.store(cand_key_ptr + base + pos, key.to(tl.int32, bitcast=True), mask=surv)
                tl.store(cand_idx_ptr + base + pos, idx, mask=surv)
                tl.debug_barrier()  # the survivors stored above are read by other threads of this program
                o = tl.arange(0, CAP)
                v = o < n_s
                ci = tl.load(cand_idx_ptr + base + o, mask=v, other=0)
                ck = tl.load(cand_key_ptr + base + o, mask=v, other=0).to(tl.uint32, bitcast=True)
                ck = tl.where(v, ck, 0)
                t, n_ties = _kth_key(ck, K, 2)
                sel, slot = _compact_slots(ck, v, t, n_ties)
                ids = tl.load(table_ptr + b * max_pages + ci, mask=sel, other=-1)
                tl.store(out_row + slot, ids, mask=sel)
        if done == 0:
            t, n_ties = _kth_key(key, K, 8 if RADIX else 1)
            sel, slot = _compact_slots(key, valid, t, n_ties)
            ids = tl.load(table_ptr + b * max_pages + idx, mask=sel, other=-1)
            tl.store(out_row + slot, ids, mask=sel)


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _num_splits(bh: int, max_pages: int, block_p: int, device: torch.device, cfg: SelectConfig) -> int:
    """Scoring programs per (sequence, KV head); 1 (scoring fused into the select kernel) off CUDA."""
    if device.type != "cuda":
        return 1
    sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    wanted = max(triton.cdiv(max_pages, cfg.pages_per_program), triton.cdiv(cfg.programs_per_sm * sms, bh))
    return max(1, min(wanted, triton.cdiv(max_pages, block_p)))


def _auto_block_r(bh: int, max_pages: int, device: torch.device) -> int:
    if device.type != "cuda" or bh >= _sm_count(device.index if device.index is not None
                                                 else torch.cuda.current_device()):
        return 1024
    return min(4096, max(1024, triton.next_power_of_2(max_pages)))


def _merge_warps(cand: int, radix: bool) -> int:
    """Warps of the merge over `cand` in-register candidates: 32 keys a thread for the bisection; 8 with
    the radix passes (sm_90 build, Triton's ptxas: 32 keys a thread need 197 registers at 4K candidates
    and spill at 8K; 16 keys a thread at 8 warps spill at 4K; 8 keys a thread: 101 registers, no stack)."""
    return min(16, max(4, cand // (256 if radix else 1024)))


def _prefilter_params(k: int, cfg: SelectConfig) -> tuple[int, int]:
    """(NG, CAP) of `_prefilter_select`: NG = next_pow2(k) interleaved groups, CAP = 16 * NG candidates (of
    random scores ~NG * ln(NG) pages survive: 270 at NG = 64); (0, 0) where it is off or k > 512."""
    ng = triton.next_power_of_2(k)
    if not cfg.prefilter or ng > 512:
        return 0, 0
    return ng, max(64, 16 * ng)


def _select_params(bh: int, max_pages: int, k: int, device: torch.device,
                   cfg: SelectConfig) -> tuple[int, int, int, int, int]:
    """(ROW, BLOCK_R, warps, NG, CAP) of the select kernel: NG > 0 the prefilter (`_prefilter_params`, its
    fallback the radix passes); else ROW is the padded row of the single read (0: radix path); after the
    single read, the compaction re-reads the row 8 scores a thread at a time (no spills)."""
    ng, cap = _prefilter_params(k, cfg)
    if ng:
        # rows that do not fill the SMs take the row in few long steps (`_auto_block_r`) on 8 warps: H100,
        # sweep_launch.py, block_r 4096 / 8 warps against 1024 / 4: batch 16 / 30K 0.0679 vs 0.0744 ms (bf16),
        # batch 4 0.0332 vs 0.0396; at batch 80 / 32K (640 rows) 10 % slower, so 1024 there
        block_r = max(cfg.block_r or _auto_block_r(bh, max_pages, device), ng)
        warps = cfg.select_warps or min(16, max(4, min(8, block_r // 256), cap // 512))
        return 0, block_r, warps, ng, cap
    if max_pages <= cfg.single_read_max:
        row = triton.next_power_of_2(max_pages)
        warps = cfg.single_read_warps or min(16, max(4, row // 1024))
        return row, cfg.block_r or min(row, 256 * warps), warps, 0, 0
    block_r = cfg.block_r or _auto_block_r(bh, max_pages, device)
    return 0, block_r, cfg.select_warps or max(4, block_r // 256), 0, 0


def _validate(q, page_table, lengths, mean, std, k, page_size, mode, sigma, kmin, kmax, scale, splits, scores,
              out):
    """`validate_select` plus what the kernels need: a Triton mode, one stats dtype, contiguity, buffers."""
    B, H, D, Hkv, G = validate_select(q, page_table, lengths, mean, std, k, page_size, mode,
                                      sigma, kmin, kmax, scale)
    require(mode, "select")
    wide = [(n, t) for n, t in (("sigma", sigma), ("kmin", kmin), ("kmax", kmax)) if t is not None]
    if scale is None:
        wide.insert(0, ("mean", mean))
    for name, t in wide[1:]:
        if t.dtype != wide[0][1].dtype:
            raise ValueError(f"{name} must have the dtype of {wide[0][0]} ({wide[0][1].dtype}), got {t.dtype}")
    dense = [t for t in (page_table, lengths, mean, std, scale) if t is not None]
    if q.stride(-1) != 1 or not all(t.is_contiguous() for t in dense):
        raise ValueError("q must be contiguous in D; page_table, lengths, mean, std, scale must be contiguous")
    if splits is not None and (not isinstance(splits, int) or splits < 1):
        raise ValueError(f"splits must be an int >= 1 or None, got {splits!r}")
    for name, t, shape, dtype in (("scores", scores, (B, Hkv, page_table.shape[1]), torch.float32),
                                  ("out", out, (B, Hkv, k), torch.int32)):
        if t is not None:
            check_tensor(name, t, shape, (dtype,))
            if not t.is_contiguous() or t.device != q.device:
                raise ValueError(f"{name} must be contiguous and on {q.device}")


def _filter_split(bh: int, max_pages: int, k: int, block_p: int, device: torch.device, cfg: SelectConfig,
                  auto: bool) -> int:
    """Pages per program of the split-filter path, or 0 for the whole-row select (see SelectConfig)."""
    f = cfg.filter_split
    if f == 0 or (f is None and (not auto or device.type != "cuda")):
        return 0
    if f is None:
        sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
        if bh >= sms or max_pages < FILTER_MIN_PAGES:
            return 0
        f = max(triton.next_power_of_2(triton.cdiv(max_pages, triton.cdiv(cfg.programs_per_sm * sms, bh))),
                triton.next_power_of_2(2 * k))
    f = min(4096, max(f, block_p, 16))
    while triton.next_power_of_2(triton.cdiv(max_pages, f) * k) > MAX_SINGLE_READ and f < 4096:
        f *= 2  # the merge holds every candidate of a row in registers
    return f if triton.next_power_of_2(triton.cdiv(max_pages, f) * k) <= MAX_SINGLE_READ else 0


def _launch_meta(q, mean, std, sigma, kmin, kmax, scale, mode, page_size, block_p, cfg):
    """(statistics pointers, constexpr meta-parameters, scoring launch options) of one call."""
    (_, H, D), Hkv = q.shape, mean.shape[1]
    dummy = mean
    stats = (mean, std, sigma if sigma is not None else dummy, kmin if kmin is not None else dummy,
             kmax if kmax is not None else dummy, scale if scale is not None else std)
    read = [mean] + [t for t in (sigma, kmin, kmax) if t is not None]
    # TC scoring reads bf16 statistics (fp8 means widen to bf16 exactly); others keep the tf32 / FMA paths
    tc = cfg.tc is not False and all(t.dtype == torch.bfloat16 for t in read if t is not mean or scale is None)
    # 1 / 2: bf16 products, 3 / 4: fp16 products of coded means (SelectConfig.fp8_f16), 5 / 6: int8 products of
    # int8 codes (SelectConfig.int8_mma); 2 / 4 / 6: the interpreter's fp32 form (see _mma)
    f16 = scale is not None and cfg.fp8_f16 and "mean" in SCORES[mode].stats  # quest reads no means
    # int8 products: scores without sigma (perdim's needs bf16 |q| operands), D >= 32 (an int8 MMA's K step)
    # (default None: on unless the fp16 products were asked for)
    i8 = (scale is not None and (cfg.int8_mma or (cfg.int8_mma is None and not cfg.fp8_f16))
          and mean.dtype == torch.int8 and D >= 32 and "mean" in SCORES[mode].stats
          and "sigma" not in SCORES[mode].stats)
    tc = 0 if not tc else (5 if i8 else 3 if f16 else 1) + (q.device.type == "cpu")
    meta = dict(HKV=Hkv, G=H // Hkv, GP=max(16, triton.next_power_of_2(H // Hkv)), D=D,
                BLOCK_D=max(16, triton.next_power_of_2(D)), S=page_size, BLOCK_P=block_p, MODE=MODE_IDS[mode],
                PREC="ieee" if all(t.dtype == torch.float32 for t in read) else "tf32", PREFETCH=cfg.prefetch,
                HAS_SCALE=scale is not None, TC=tc, SCORES_L2=cfg.scores_l2,
                FMA=not tc and (cfg.fma if cfg.fma is not None else scale is not None))
    score_launch = {"num_warps": cfg.score_warps}  # register caps: `_register_cap`, per kernel
    if cfg.score_stages is not None:
        score_launch["num_stages"] = cfg.score_stages
    elif tc and (scale is None or i8):
        score_launch["num_stages"] = 1  # bf16 TC, int8 codes on IGMMA: plain loads (score_stages, int8_mma)
    return stats, meta, score_launch


def _register_cap(cfg: SelectConfig, meta: dict, kernel: str) -> dict:
    """The ptxas register cap of a scoring launch ({"maxnreg": n} or {}): `kernel` "score" (the split scoring
    kernel: SelectConfig.score_maxnreg, by default INT8_D64_MAXNREG for int8 products at head_dim <= 64, where it
    was measured faster) or "filter" (the split filter, which also holds its local top-k: only a cap asked for).
    The select kernel that scores itself (splits = 1) takes none."""
    cap = cfg.score_maxnreg
    if cap is None and kernel == "score":
        cap = INT8_D64_MAXNREG if meta["TC"] in (5, 6) and meta["D"] <= 64 else 0
    return {"maxnreg": cap} if cap else {}


def _filter_launch(score_launch: dict, meta: dict, cfg: SelectConfig) -> dict:
    """The split filter kernel's launch options: the scoring's, with plain loads for TC scoring (see
    SelectConfig.score_stages), and its register cap."""
    launch = dict(score_launch, **_register_cap(cfg, meta, "filter"))
    if cfg.score_stages is None and meta["TC"]:
        launch["num_stages"] = 1
    return launch


def score_pages(q, page_table, lengths, mean, std, *, page_size, mode="unique", lam=0.5, sigma=None, kmin=None,
                kmax=None, scale=None, scores=None, validate=True, config: SelectConfig | None = None):
    """The scoring pass alone (the Triton twin of `page_scores_naive`): fp32 [B, Hkv, max_pages] group-max
    page scores, -inf where not held. Same arguments as `select_pages` (no k); the split scoring kernel
    with programs of about `config.pages_per_program` pages (benchmarks time it apart from the top-k)."""
    if validate:
        _validate(q, page_table, lengths, mean, std, 1, page_size, mode, sigma, kmin, kmax, scale, None,
                  scores, None)
    cfg = config or SelectConfig()
    B, Hkv, M = q.shape[0], mean.shape[1], page_table.shape[1]
    scores = torch.empty(B, Hkv, M, dtype=torch.float32, device=q.device) if scores is None else scores
    score = SCORES[mode]
    block_p = cfg.block_p // max(1, score.wide_stats)
    stats, meta, score_launch = _launch_meta(q, mean, std, sigma, kmin, kmax, scale, mode, page_size, block_p,
                                             cfg)
    per_split = triton.cdiv(min(M, cfg.pages_per_program), block_p) * block_p if M else block_p
    _score_kernel[(B * Hkv, max(1, triton.cdiv(M, per_split)))](
        q, q.stride(0), q.stride(1), page_table, lengths, M, *stats, scores,
        float(lam) if score.uses_lam else 0.0, 0, per_split, FILL=True, **meta, **score_launch,
        **_register_cap(cfg, meta, "score"), **pdl_launch(q))
    return scores


def select_pages(q, page_table, lengths, mean, std, *, k, page_size, mode="unique", lam=0.5,
                 keep_first=False, keep_last=False, sigma=None, kmin=None, kmax=None, scale=None,
                 splits=None, scores=None, out=None, validate=True, config: SelectConfig | None = None):
    """Score every held page and select the top-k per (sequence, KV head).

    q [B, H, D] (last dim contiguous); page_table int32 [B, max_pages]; lengths int32 [B]; mean
    [P, Hkv, D]; std fp32 [P, Hkv]; sigma / kmin / kmax [P, Hkv, D] (perdim / quest, one dtype, that of
    mean unless mean is fp8); scale fp32 [P, Hkv] with fp8 (e4m3) means: mu = mean * scale.
    splits: scoring programs per (b, h) of the whole-row path (None: from `config` and the SM count, or
    the split-filter path where `config` picks it; 1: scoring fused into the select kernel; a number
    keeps the whole-row path unless config.filter_split is set); scores: optional fp32 scratch
    [B, Hkv, max_pages]; out: optional int32 [B, Hkv, k]
    (preallocated buffers keep the call CUDA-graph capturable); validate=False skips the host-side
    checks (~20 us); config: launch parameters (`SelectConfig`).
    Returns int32 [B, Hkv, k] physical page ids in ascending logical order, -1 padded.
    """
    if validate:
        _validate(q, page_table, lengths, mean, std, k, page_size, mode, sigma, kmin, kmax, scale,
                  splits, scores, out)
    cfg = config or SelectConfig()
    B, Hkv, M = q.shape[0], mean.shape[1], page_table.shape[1]
    scores = torch.empty(B, Hkv, M, dtype=torch.float32, device=q.device) if scores is None else scores
    out = torch.empty(B, Hkv, k, dtype=torch.int32, device=q.device) if out is None else out
    score = SCORES[mode]
    block_p = cfg.block_p // max(1, score.wide_stats)
    stats, meta, score_launch = _launch_meta(q, mean, std, sigma, kmin, kmax, scale, mode, page_size, block_p,
                                             cfg)
    lam = float(lam) if score.uses_lam else 0.0
    pdl = pdl_launch(q)
    fsplit = _filter_split(B * Hkv, M, k, block_p, q.device, cfg, auto=splits is None)
    if fsplit:
        score_launch = _filter_launch(score_launch, meta, cfg)
        n_splits = triton.cdiv(M, fsplit)
        cand_key = torch.empty(B * Hkv * n_splits * k, dtype=torch.int32, device=q.device)
        cand_idx = torch.empty_like(cand_key)
        _filter_kernel[(B * Hkv, n_splits)](
            q, q.stride(0), q.stride(1), page_table, lengths, M, *stats, scores, cand_key, cand_idx, lam, k,
            n_splits, SPLIT=fsplit, KEEP_FIRST=keep_first, KEEP_LAST=keep_last, RADIX=cfg.split_radix, **meta,
            **score_launch, **pdl)
        cand = triton.next_power_of_2(n_splits * k)
        ng = triton.next_power_of_2(k) if cfg.merge_bound else 0
        _merge_kernel[(B * Hkv,)](page_table, lengths, M, cand_key, cand_idx, out, k, n_splits, HKV=Hkv,
                                  S=page_size, CAND=cand, BLOCK_P=block_p, RADIX=cfg.split_radix, NG=ng,
                                  CAP=min(16 * ng, cand) if ng else 16,
                                  num_warps=_merge_warps(cand, cfg.split_radix), **pdl)
        return out
    splits = _num_splits(B * Hkv, M, block_p, q.device, cfg) if splits is None else splits
    row, block_r, select_warps, ng, cap = _select_params(B * Hkv, M, k, q.device, cfg)
    cand_key = torch.empty(B * Hkv * cap if ng else 1, dtype=torch.int32, device=q.device)
    cand_idx = torch.empty_like(cand_key)
    if splits > 1:
        per_split = triton.cdiv(triton.cdiv(M, splits), block_p) * block_p
        _score_kernel[(B * Hkv, triton.cdiv(M, per_split))](
            q, q.stride(0), q.stride(1), page_table, lengths, M, *stats, scores, lam, k, per_split,
            FILL=False, **meta, **score_launch, **_register_cap(cfg, meta, "score"), **pdl)
    if splits == 1:  # the select kernel runs the scoring loops too (not under the scoring's register cap)
        select_launch = dict(score_launch, num_warps=max(cfg.score_warps, select_warps if row or ng else 0))
    else:
        select_launch = {"num_warps": select_warps}
    _select_kernel[(B * Hkv,)](
        q, q.stride(0), q.stride(1), page_table, lengths, M, *stats, scores, out, cand_key, cand_idx, lam, k,
        NG=ng, CAP=cap, KBITS=cfg.kth_bits, BLOCK_R=block_r, FUSED=splits == 1,
        KEEP_FIRST=keep_first,
        KEEP_LAST=keep_last, ROW=row, **meta, **select_launch, **pdl)
    return out
