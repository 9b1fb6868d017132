"""TC scoring of one-byte means (e4m3 or int8 codes) in fp16 products (SelectConfig.fp8_f16, opt-in): the
codes widened to fp16, q scaled by a power of two into fp16's range and split into fp16 hi + lo. Triton
(interpreter on CPU: the same fp16 operands multiplied in fp32) against the PyTorch twin; small shapes (each
test < 3 s there)."""

from __future__ import annotations

import pytest
import torch
from unique_asr.kernels.page_stats.naive import quantise_mean
from unique_asr.kernels.select_pages import SelectConfig, page_scores_naive, score_pages, select_pages
from unique_asr.kernels.select_pages import triton as sp

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
F16 = dict(fp8_f16=True)


def make_inputs(lengths, Hkv=1, G=2, D=16, S=4, seed=0, code="fp8"):
    """q bf16 [B, Hkv*G, D]; one-byte codes (`code`) + scale of random means, bf16 sigma, fp32 std; shuffled
    pages."""
    gen = torch.Generator().manual_seed(seed)
    held = [-(-n // S) for n in lengths]
    M, P = max(held) + 1, sum(held) + 2
    perm = torch.randperm(P, generator=gen).int()
    table = torch.full((len(lengths), M), -1, dtype=torch.int32)
    start = 0
    for b, h in enumerate(held):
        table[b, :h] = perm[start:start + h]
        start += h
    codes, scale = quantise_mean(torch.randn(P, Hkv, D, generator=gen) * 3, code)
    st = dict(mean=codes, scale=scale, std=torch.rand(P, Hkv, generator=gen) * 3,
              sigma=torch.rand(P, Hkv, D, generator=gen).bfloat16())
    st = {n: t.to(DEVICE) for n, t in st.items()}
    q = torch.randn(len(lengths), Hkv * G, D, generator=gen).bfloat16().to(DEVICE)
    return q, table.to(DEVICE), torch.tensor(lengths, dtype=torch.int32, device=DEVICE), st


@pytest.mark.parametrize("code", ["fp8", "int8"])
@pytest.mark.parametrize("mode", ["unique", "mean", "perdim"])
@pytest.mark.parametrize("q_scale", [1.0, 2.0**-100, 2.0**40])
def test_fp16_products_score_like_the_twin(mode, q_scale, code):
    """Scores within 2e-6 of the twin's (fp16 hi + lo keeps 22 bits of each q element) for q of any
    magnitude (2^-100, 2^40: far outside fp16's range before the power-of-two scaling), an empty sequence,
    partial pages; the default bf16 widening within its 2^-16."""
    q, table, lens, st = make_inputs([4 * 13 - 1, 0, 9], G=2, code=code)
    q = (q.float() * q_scale).bfloat16()
    kw = dict(page_size=4, mode=mode, scale=st["scale"], sigma=st["sigma"])
    want = page_scores_naive(q, table, lens, st["mean"], st["std"], **kw)
    held = ~torch.isinf(want)
    for cfg, rtol in ((SelectConfig(pages_per_program=16, block_p=16, **F16), 2e-6),
                      (SelectConfig(pages_per_program=16, block_p=16), 2e-5)):
        got = score_pages(q, table, lens, st["mean"], st["std"], config=cfg, **kw)
        assert torch.equal(torch.isinf(got), ~held)
        err = (got[held] - want[held]).abs().max() / want[held].abs().max()
        assert err <= rtol, (cfg.fp8_f16, float(err))


def test_fp16_products_select_like_the_twin_on_every_path():
    """GQA group of 4, a forced first page, rows longer than the budget, fitting it, partial pages: the
    whole-row select (fused and split scoring) and the split filter select a top-k of the twin's scores;
    a budget covering every page selects all of them (dense)."""
    q, table, lens, st = make_inputs([4 * 24 + 2, 4 * 3, 4 * 9 - 3], G=4)
    kw = dict(page_size=4, scale=st["scale"])
    scores = page_scores_naive(q, table, lens, st["mean"], st["std"], **kw)
    for splits, cfg in ((1, SelectConfig(kth_bits=1, **F16)), (2, SelectConfig(kth_bits=1, block_p=16, **F16)),
                        (None, SelectConfig(filter_split=16, block_p=16, **F16))):
        got = select_pages(q, table, lens, st["mean"], st["std"], k=4, keep_first=True, splits=splits,
                           config=cfg, **kw)
        for b in range(3):
            n = -(-int(lens[b]) // 4)
            chosen = [int((table[b, :n] == p).nonzero()) for p in got[b, 0].tolist() if p >= 0]
            assert chosen == sorted(chosen) and 0 in chosen and len(chosen) == min(4, n)
            rest = [i for i in range(n) if i not in chosen]
            if rest:
                free = [i for i in chosen if i != 0]
                assert scores[b, 0, free].min() >= scores[b, 0, rest].max() - 1e-4
    dense = select_pages(q, table, lens, st["mean"], st["std"], k=64, config=SelectConfig(kth_bits=1, **F16),
                         **kw)
    assert dense[0, 0].tolist() == table[0, :25].tolist() + [-1] * 39


def test_launch_ids():
    """TC ids: 3 (GPU) / 4 (interpreter) for fp8 means with fp8_f16 (off by default), else 1 / 2; none
    without TC."""
    q, _, _, st = make_inputs([20])
    args = (q, st["mean"], st["std"], None, None, None)
    for cfg, want in ((SelectConfig(**F16), 4), (SelectConfig(), 2), (SelectConfig(tc=False), 0)):
        _, meta, _ = sp._launch_meta(*args, st["scale"], "unique", 4, 64, cfg)
        assert meta["TC"] == (want if DEVICE == "cpu" else want - 1 if want else 0), cfg
    kq = st["sigma"]  # quest reads kmin / kmax (bf16), never the fp8 means: bf16 products
    _, meta, _ = sp._launch_meta(q, st["mean"], st["std"], None, kq, kq, st["scale"], "quest", 4, 32,
                                 SelectConfig(**F16))
    assert meta["TC"] == (2 if DEVICE == "cpu" else 1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("code", ["fp8", "int8"])
@pytest.mark.parametrize("mode", ["unique", "mean", "perdim"])
def test_gpu_fp16_products_at_model_shapes(mode, code):
    """32/8 heads, D = 128, rows of 8K pages: scores within 1e-5 of the twin's largest on the tensor cores
    (fp16 products), and the selection a top-64 of the twin's scores on the whole-row and filter paths."""
    q, table, lens, st = make_inputs([65536, 3001, 9], Hkv=8, G=4, D=128, S=8, seed=1, code=code)
    kw = dict(page_size=8, mode=mode, scale=st["scale"], sigma=st["sigma"])
    want = page_scores_naive(q, table, lens, st["mean"], st["std"], **kw)
    held = ~torch.isinf(want)
    got = score_pages(q, table, lens, st["mean"], st["std"], config=SelectConfig(**F16), **kw)
    assert torch.equal(torch.isinf(got), ~held)
    assert (got[held] - want[held]).abs().max() <= 1e-5 * want[held].abs().max()
    for cfg in (SelectConfig(**F16), SelectConfig(filter_split=256, **F16)):
        out = select_pages(q, table, lens, st["mean"], st["std"], k=64, config=cfg, **kw)
        chosen = (table[:, None, :, None] == out[:, :, None, :]).any(-1) & held[:, :1, :].any(1)[:, None]
        n = held[:, 0].sum(-1).clamp(max=64)
        assert torch.equal(chosen.sum(-1), n[:, None].expand_as(chosen.sum(-1)))
        worst_in = torch.where(chosen, want, torch.inf).amin(-1)
        best_out = torch.where(held & ~chosen, want, -torch.inf).amax(-1)
        assert (worst_in >= best_out - 1e-3).all()
