"""Fused decode-step pieces: the Triton kernels (interpreter on CPU) against their PyTorch twins, and the twins
against the plain formulas the model used before (RMSNorm module, rotate(), silu(gate) * up)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from unique_asr.kernels.fused_step import (
    add_rms_norm,
    add_rms_norm_naive,
    rotary,
    rotary_naive,
    silu_mul,
    silu_mul_naive,
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
