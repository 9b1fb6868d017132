"""Triton paged decode attention: one decode query per (sequence, head) over selected or all KV pages.

One program owns one (sequence, KV head, split): its G query heads form one [BLOCK_G, D] tile (padded to
>= 16 rows for tl.dot), so each selected page is read once for the whole group. The selected pages (or
the page-table slots, for the dense path) are cut into NUM_SPLITS contiguous ranges so that even batch 1
fills the GPU; each range keeps an online softmax in fp32 and, when there is more than one split, writes
its normalised partial output and log-sum-exp, which a second kernel merges. Shapes, dtypes and the
partial-last-page rule are those of naive.py (the reference).
"""

from __future__ import annotations

import functools
import math
import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .._pdl import pdl_enter, pdl_launch
from .naive import validate_decode_inputs

_LOG2E = 1.4426950408889634


class DecodeConfig(NamedTuple):
    """Launch shape. block_n: tokens per inner step; programs_per_sm: split-K aims for this many programs
    per SM (several waves, so the last one's tail is short); min_split_tokens: no split is shorter;
    prefetch_ids: load page ids one step ahead. Defaults: the H200 tuning run in BENCHMARKS.md."""

    block_n: int = 32
    num_warps: int = 4
    num_stages: int = 3
    programs_per_sm: int = 2
    min_split_tokens: int = 64
    prefetch_ids: bool = True


@triton.jit
def _decode_kernel(
    q_ptr, k_ptr, v_ptr, ids_ptr, table_ptr, len_ptr, out_ptr, part_o_ptr, part_lse_ptr,
    qk_scale, n_slots, slots_per_split,
    stride_qb, stride_qh, stride_kp, stride_ks, stride_kh, stride_vp, stride_vs, stride_vh,
    stride_ib, stride_ih, stride_tb, stride_ob, stride_oh,
    G: tl.constexpr, HKV: tl.constexpr, S: tl.constexpr, D: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, NUM_SPLITS: tl.constexpr, DENSE: tl.constexpr,
    DOT_F32: tl.constexpr, PREFETCH_IDS: tl.constexpr, PARTIALS: tl.constexpr, PDL: tl.constexpr = False,
):
    pdl_enter(PDL)
    bh = tl.program_id(0)
    split = tl.program_id(1)
    b = bh // HKV
    h = bh % HKV
    length = tl.load(len_ptr + b)
    rows = tl.arange(0, BLOCK_G)
    dims = tl.arange(0, D)
    q = tl.load(
        q_ptr + b * stride_qb + (h * G + rows)[:, None] * stride_qh + dims[None, :],
        mask=rows[:, None] < G, other=0.0,
    )
    # The logical last page is the only partial one: find its physical id and its valid-token count.
    last_slot = tl.maximum(length - 1, 0) // S
    last_phys = tl.load(table_ptr + b * stride_tb + last_slot)
    last_phys = tl.where(length > 0, last_phys, -2)
    last_valid = length - last_slot * S

    slot_lo = split * slots_per_split
    tok_hi = tl.minimum(slot_lo + slots_per_split, n_slots) * S
    m_i = tl.full([BLOCK_G], -1.0e30, tl.float32)  # finite start: fully masked steps give exp2(-inf) = 0
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, D], tl.float32)
    ids_row = ids_ptr + b * stride_ib + h * stride_ih
    if PREFETCH_IDS:  # load the next step's page ids one step ahead, off the K/V loads' critical path
        t_next = slot_lo * S + tl.arange(0, BLOCK_N)
        page_next = tl.load(ids_row + t_next // S, mask=t_next < tok_hi, other=-1)
    for start in range(slot_lo * S, tok_hi, BLOCK_N):
        t = start + tl.arange(0, BLOCK_N)
        off = t % S
        if PREFETCH_IDS:
            page = page_next
            page_next = tl.load(ids_row + (t + BLOCK_N) // S, mask=t + BLOCK_N < tok_hi, other=-1)
        else:
            page = tl.load(ids_row + t // S, mask=t < tok_hi, other=-1)
        if DENSE:
            valid = (page >= 0) & (t < length)
        else:
            valid = (page >= 0) & ((page != last_phys) | (off < last_valid))
        page = tl.where(valid, page, 0).to(tl.int64)
        k = tl.load(
            k_ptr + page[:, None] * stride_kp + off[:, None] * stride_ks + h * stride_kh + dims[None, :],
            mask=valid[:, None], other=0.0,
        )
        v = tl.load(
            v_ptr + page[:, None] * stride_vp + off[:, None] * stride_vs + h * stride_vh + dims[None, :],
            mask=valid[:, None], other=0.0,
        )
        if DOT_F32:  # the CPU interpreter computes bf16 tl.dot wrongly (triton 3.6); fp32 there
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        qk = tl.dot(q.to(k.dtype), tl.trans(k)) * qk_scale
        qk = tl.where(valid[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(qk - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    if NUM_SPLITS == 1 and not PARTIALS:
        out_rows = out_ptr + b * stride_ob + (h * G + rows)[:, None] * stride_oh + dims[None, :]
        tl.store(out_rows, out.to(out_ptr.dtype.element_ty), mask=rows[:, None] < G)
    else:
        base = (bh * NUM_SPLITS + split) * G
        tl.store(part_o_ptr + (base + rows)[:, None] * D + dims[None, :], out, mask=rows[:, None] < G)
        lse = tl.where(l_i > 0, m_i + tl.log2(l_i), float("-inf"))
        tl.store(part_lse_ptr + base + rows, lse, mask=rows < G)


@triton.jit
def _merge_kernel(
    part_o_ptr, part_lse_ptr, out_ptr, stride_ob, stride_oh,
    G: tl.constexpr, HKV: tl.constexpr, D: tl.constexpr, NUM_SPLITS: tl.constexpr, BLOCK_S: tl.constexpr,
    PDL: tl.constexpr = False,
):
    """One program per (sequence, query head): log-sum-exp merge of its NUM_SPLITS partial outputs, read
    BLOCK_S splits at a time (independent loads, not one dependent load per split)."""
    pdl_enter(PDL)
    bq = tl.program_id(0)
    b = bq // (HKV * G)
    hq = bq % (HKV * G)
    row0 = (b * HKV + hq // G) * NUM_SPLITS * G + hq % G  # part row of split 0; split s is row0 + s * G
    splits = tl.arange(0, BLOCK_S)
    dims = tl.arange(0, D)
    m = tl.full([1], -1.0e30, tl.float32)
    l = tl.zeros([1], tl.float32)
    acc = tl.zeros([D], tl.float32)
    for s0 in range(0, NUM_SPLITS, BLOCK_S):
        rows = row0 + (s0 + splits) * G
        ok = s0 + splits < NUM_SPLITS
        lse = tl.load(part_lse_ptr + rows, mask=ok, other=float("-inf"))
        o = tl.load(part_o_ptr + rows[:, None] * D + dims[None, :], mask=ok[:, None], other=0.0)
        m_new = tl.maximum(m, tl.max(lse, 0))
        alpha = tl.exp2(m - m_new)
        w = tl.exp2(lse - m_new)
        acc = acc * alpha + tl.sum(o * w[:, None], 0)
        l = l * alpha + tl.sum(w, 0)
        m = m_new
    out = acc / tl.where(l > 0, l, 1.0)
    tl.store(out_ptr + b * stride_ob + hq * stride_oh + dims, out.to(out_ptr.dtype.element_ty))


SPARSE_CONFIG = DecodeConfig()
DENSE_CONFIG = DecodeConfig(block_n=64, programs_per_sm=8, min_split_tokens=256, prefetch_ids=False)


@functools.lru_cache(maxsize=None)
def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 4  # the interpreter: a few splits so tests exercise the merge
    return torch.cuda.get_device_properties(device).multi_processor_count


def _num_splits(programs: int, n_slots: int, page_size: int, device: torch.device, cfg: DecodeConfig):
    """(splits, slots per split) for `programs` (sequence, KV head) pairs over n_slots page slots each."""
    slot_quantum = max(1, cfg.block_n // page_size)
    max_splits = max(1, (n_slots * page_size) // cfg.min_split_tokens)
    splits = max(1, min(math.ceil(cfg.programs_per_sm * _sm_count(device) / programs), max_splits))
    per_split = math.ceil(math.ceil(n_slots / splits) / slot_quantum) * slot_quantum
    return math.ceil(n_slots / per_split), per_split


def _check_triton_inputs(q, k_pool, v_pool, page_ids, page_table, lengths) -> None:
    validate_decode_inputs(q, k_pool, v_pool, page_ids, page_table, lengths, dtypes=(torch.bfloat16, torch.float16))
    D = q.shape[-1]
    if D not in (16, 32, 64, 128, 256):
        raise ValueError(f"head dim must be a power of two in [16, 256], got {D}")
    if q.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(f"the Triton kernel needs CUDA tensors (or TRITON_INTERPRET=1), got {q.device}")
    for t in (q, k_pool, v_pool, page_ids, page_table):
        if t is not None and t.stride(-1) != 1:
            raise ValueError("q, k_pool, v_pool, page_ids and page_table need a contiguous last dimension")


def _launch(q, k_pool, v_pool, page_ids, page_table, lengths, scale, dense: bool, cfg, partials: bool = False):
    """The decode kernel, its splits merged into [B, H, D] in q.dtype; with partials, no merge: returns
    (part_o fp32 [B * Hkv * splits * G, D] normalised per split, part_lse fp32 (log2 domain) [same rows],
    splits), rows ordered (sequence, KV head, split, group row), for a caller that merges more terms."""
    B, H, D = q.shape
    S, Hkv = k_pool.shape[1], k_pool.shape[2]
    G = H // Hkv
    n_slots = page_ids.shape[-1]
    cfg = cfg or (DENSE_CONFIG if dense else SPARSE_CONFIG)
    splits, per_split = _num_splits(B * Hkv, n_slots, S, q.device, cfg)
    block_g = max(16, triton.next_power_of_2(G))
    out = torch.empty_like(q)
    keep = splits > 1 or partials
    part_o = torch.empty((B * Hkv * splits * G, D) if keep else (1,), device=q.device, dtype=torch.float32)
    part_lse = torch.empty((B * Hkv * splits * G,) if keep else (1,), device=q.device, dtype=torch.float32)
    scale = D ** -0.5 if scale is None else scale
    _decode_kernel[(B * Hkv, splits)](
        q, k_pool, v_pool, page_ids, page_table, lengths, out, part_o, part_lse,
        scale * _LOG2E, n_slots, per_split,
        q.stride(0), q.stride(1), k_pool.stride(0), k_pool.stride(1), k_pool.stride(2),
        v_pool.stride(0), v_pool.stride(1), v_pool.stride(2),
        page_ids.stride(0), page_ids.stride(1), page_table.stride(0), out.stride(0), out.stride(1),
        G=G, HKV=Hkv, S=S, D=D, BLOCK_G=block_g, BLOCK_N=cfg.block_n, NUM_SPLITS=splits, DENSE=dense,
        DOT_F32=q.device.type != "cuda", PREFETCH_IDS=cfg.prefetch_ids, PARTIALS=partials,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages, **pdl_launch(q),
    )
    if partials:
        return part_o, part_lse, splits
    if splits > 1:
        _merge_kernel[(B * H,)](
            part_o, part_lse, out, out.stride(0), out.stride(1),
            G=G, HKV=Hkv, D=D, NUM_SPLITS=splits, BLOCK_S=min(32, triton.next_power_of_2(splits)), num_warps=4,
            **pdl_launch(q),
        )
    return out


def sparse_decode_attention(q, k_pool, v_pool, page_ids, page_table, lengths, scale=None, config=None):
    """Exact softmax over the selected physical pages. q [B,H,D] bf16/fp16; page_ids int32 [B,Hkv,k]
    (-1 = skip); page_table int32 [B,M]; lengths int32 [B]; returns [B,H,D] in q.dtype. Page ids are
    trusted to lie in [0, P): the kernel does not bounds-check them (that would need a host sync).
    config: a DecodeConfig overriding SPARSE_CONFIG (benchmarks)."""
    _check_triton_inputs(q, k_pool, v_pool, page_ids, page_table, lengths)
    return _launch(q, k_pool, v_pool, page_ids, page_table, lengths, scale, False, config)


def dense_paged_decode_attention(q, k_pool, v_pool, page_table, lengths, scale=None, config=None):
    """Same kernel over every page of the page table (logical order, positions >= lengths masked)."""
    _check_triton_inputs(q, k_pool, v_pool, None, page_table, lengths)
    ids = page_table[:, None, :].expand(q.shape[0], k_pool.shape[2], page_table.shape[1])  # stride 0 over Hkv
    return _launch(q, k_pool, v_pool, ids, page_table, lengths, scale, True, config)
