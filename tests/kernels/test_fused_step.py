"""Fused decode-step pieces: the Triton kernels (interpreter on CPU) against their PyTorch twins, and the twins
against the plain formulas the model used before (RMSNorm module, rotate(), silu(gate) * up)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from unique_asr.kernels.fused_step import (
    SkinnyConfig,
    add_rms_norm,
    add_rms_norm_naive,
    rotary,
    rotary_naive,
    rotary_sum,
    rotary_sum_naive,
    silu_mul,
    silu_mul_naive,
    skinny_linear,
    skinny_linear_naive,
)

from unique_asr.models.llm import rotate

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_x", [True, False])
def test_add_rms_norm_matches_its_twin_and_the_module(dtype, with_x):
    g = torch.Generator().manual_seed(0)
    residual = torch.randn(5, 40, generator=g).to(dtype).to(DEVICE)
    x = torch.randn(5, 40, generator=g).to(dtype).to(DEVICE) if with_x else None
    weight = (1 + 0.3 * torch.randn(40, generator=g)).to(dtype).to(DEVICE)
    r1, r2 = residual.clone(), residual.clone()
    out = add_rms_norm(x, r1, weight, 1e-6)
    ref = add_rms_norm_naive(x, r2, weight, 1e-6)
    torch.testing.assert_close(r1, r2, **TOL[dtype])
    torch.testing.assert_close(out, ref, **TOL[dtype])
    norm = torch.nn.RMSNorm(40, eps=1e-6).to(DEVICE)
    norm.weight.data.copy_(weight.float())
    expected = norm((residual.float() + (x.float() if with_x else 0)))
    torch.testing.assert_close(ref.float(), expected, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotary_in_place_matches_its_twin_and_rotate(dtype):
    g = torch.Generator().manual_seed(1)
    heads, kv, D = 4, 2, 12
    qkv = torch.randn(3, (heads + 2 * kv) * D, generator=g).to(dtype).to(DEVICE)
    positions = torch.tensor([0, 7, 40961], device=DEVICE)
    inv_freq = 1.0 / 10000.0 ** (torch.arange(0, D, 2, device=DEVICE).float() / D)
    a, b = qkv.clone(), qkv.clone()
    rotary(a, positions, inv_freq, heads + kv, D)
    rotary_naive(b, positions, inv_freq, heads + kv, D)
    torch.testing.assert_close(a, b, **TOL[dtype])
    assert torch.equal(a[:, (heads + kv) * D:], qkv[:, (heads + kv) * D:])  # v untouched
    freqs = positions[:, None].float() * inv_freq
    emb = torch.cat((freqs, freqs), -1)
    x = qkv.float()[:, : (heads + kv) * D].unflatten(-1, (heads + kv, D))
    expected = rotate(x, emb.cos(), emb.sin())
    torch.testing.assert_close(b.float()[:, : (heads + kv) * D].unflatten(-1, (heads + kv, D)), expected,
                               **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_silu_mul_matches_its_twin(dtype):
    g = torch.Generator().manual_seed(2)
    gate_up = torch.randn(3, 2 * 1500, generator=g).to(dtype).to(DEVICE)  # two column blocks, a partial one
    out, ref = silu_mul(gate_up), silu_mul_naive(gate_up)
    torch.testing.assert_close(out, ref, **TOL[dtype])
    gate, up = gate_up.float().chunk(2, -1)
    torch.testing.assert_close(ref.float(), F.silu(gate) * up, **TOL[dtype])


@pytest.mark.parametrize("tma", [False, True])
@pytest.mark.parametrize("split", [1, 2])
@pytest.mark.parametrize("silu", [False, True])
def test_skinny_linear_matches_its_twin(split, silu, tma):
    """The skinny GEMM (x rows masked to 16, weight tiles of 16 x 16 by pointer loads or a TMA descriptor, K in
    split-K slices) against its twin, and the twin's partials summed against the plain product."""
    g = torch.Generator().manual_seed(3)
    M, N, K = 5, 48, 64
    x = torch.randn(M, 2 * K if silu else K, generator=g).to(torch.bfloat16).to(DEVICE)
    w = (0.1 * torch.randn(N, K, generator=g)).to(torch.bfloat16).to(DEVICE)
    config = SkinnyConfig(block_n=16, block_k=16, split=split, stages=1, tma=tma)
    out, ref = skinny_linear(x, w, config, silu=silu), skinny_linear_naive(x, w, config, silu=silu)
    assert out.shape == ref.shape == ((M, N) if split == 1 else (split, M, N))
    torch.testing.assert_close(out.float(), ref.float(), rtol=1e-2, atol=1e-2)
    a = silu_mul_naive(x) if silu else x
    torch.testing.assert_close((ref if split == 1 else ref.sum(0)).float(), a.float() @ w.float().T,
                               rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="does not tile"):
        skinny_linear(x, w, SkinnyConfig(block_n=32, block_k=16, split=split, tma=tma), silu=silu)
    if tma:  # a TMA box must start 16-byte aligned: a weight one element off is refused, not misread
        odd = torch.empty(N * K + 1, dtype=w.dtype, device=w.device)[1:].view(N, K)
        odd.copy_(w)
        with pytest.raises(ValueError, match="16-byte aligned"):
            skinny_linear(x, odd, config, silu=silu)


def test_norm_and_rotary_sum_split_k_partials():
    """add_rms_norm and rotary_sum take fp32 partials [S, M, N] and sum them (the GEMM's reduce, fused)."""
    g = torch.Generator().manual_seed(4)
    heads, kv, D = 4, 2, 16
    parts = torch.randn(3, 4, (heads + 2 * kv) * D, generator=g).to(DEVICE)
    positions = torch.tensor([0, 5, 99, 40961], device=DEVICE)
    inv_freq = 1.0 / 10000.0 ** (torch.arange(0, D, 2, device=DEVICE).float() / D)
    out = rotary_sum(parts, positions, inv_freq, heads + kv, D, torch.bfloat16)
    ref = rotary_sum_naive(parts, positions, inv_freq, heads + kv, D, torch.bfloat16)
    torch.testing.assert_close(out, ref, rtol=1e-2, atol=1e-2)
    summed = parts.sum(0)
    rotary_naive(summed, positions, inv_freq, heads + kv, D)
    torch.testing.assert_close(ref, summed.to(torch.bfloat16))
    residual = torch.randn(4, 128, generator=g).to(torch.bfloat16).to(DEVICE)
    weight = (1 + 0.3 * torch.randn(128, generator=g)).to(DEVICE)
    r1, r2, r3 = residual.clone(), residual.clone(), residual.clone()
    out = add_rms_norm(parts, r1, weight, 1e-6)
    ref = add_rms_norm_naive(parts, r2, weight, 1e-6)
    torch.testing.assert_close(r1, r2, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(ref, add_rms_norm_naive(parts.sum(0), r3, weight, 1e-6), rtol=2e-2, atol=2e-2)


TMA_BUILD = r'''
from unique_asr.kernels.fused_step import skinny as sk

for bn, bk, st, warps in ((64, 128, 4, 4), (128, 128, 4, 4)):
    types = {"x_ptr": "*bf16", "w_desc": "tensordesc<bf16[%d, %d]>" % (bn, bk), "out_ptr": "*bf16"}
    consts = dict(K_SLICE=3072, SILU=False, BLOCK_M=16, BLOCK_N=bn, BLOCK_K=bk, STAGES=st, DOT_F32=False)
    ops = opcodes(sk._skinny_tma_kernel, types, consts, warps)
    print(bn, ops.get("UTMALDG", 0), ops.get("HGMMA", 0), ops.get("LDGSTS", 0),
          resources(sk._skinny_tma_kernel, types, consts, warps))
'''


def test_skinny_tma_builds_bulk_copies_for_sm90():
    """The TMA skinny GEMM's offline sm_90 build streams the weight by bulk tensor copies (UTMALDG, several in
    flight: the prologue's loads plus the loop's) into Hopper's warpgroup MMA (HGMMA), with no stack."""
    from offline_build import run_build

    for line in run_build(TMA_BUILD):
        bn, tma, gmma, ldgsts, res = line.split(maxsplit=4)
        assert int(tma) >= 2 and int(gmma) > 0 and int(ldgsts) == 0, line
        assert "STACK:0 " in res, line



NORM_BUILD = r'''
from unique_asr.kernels.fused_step import triton as fs

types = {"x_ptr": "*fp32", "r_ptr": "*bf16", "w_ptr": "*bf16", "out_ptr": "*bf16", "eps": "fp32"}
for split in (1, 2, 8):
    consts = dict(HAS_X=True, SPLIT=split, BLOCK=4096)
    print(split, opcodes(fs._add_rms_norm_kernel, types, consts, 16).get("LDG", 0),
          resources(fs._add_rms_norm_kernel, types, consts, 16))
'''


def test_norm_of_split_k_partials_loads_them_together_without_spills():
    """The residual add + RMSNorm over a skinny GEMM's split-K partials (d 3072), offline sm_90 build at the 16
    warps `add_rms_norm` launches for partials: every partial's loads are in the code (unrolled: in flight
    together, not one DRAM latency a partial) and stay in registers (no stack)."""
    from offline_build import run_build

    rows = {int(line.split()[0]): line.split(maxsplit=2)[1:] for line in run_build(NORM_BUILD)}
    ldg = {split: int(n) for split, (n, _) in rows.items()}
    assert ldg[8] - ldg[1] == 7 * (ldg[2] - ldg[1]) > 0, rows
    assert all("STACK:0 " in res for _, res in rows.values()), rows
