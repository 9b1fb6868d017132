"""Whisper cross-attention on the paged sparse path, the captured decode step and the training forward.

Tiny random Whisper (transformers-initialised, 60 encoder frames, head dim 16): pages of 8 frames, so the
last page is partial (60 = 7 x 8 + 4). Dense references are the contiguous SDPA memory (mode "dense").
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from unique_asr.kernels.select_pages.registry import scores_for
from whisper_helpers import TINY, greedy_text, hf_whisper

from unique_asr.config import SparsityConfig
from unique_asr.models import SelfAttentionCache, WhisperConfig, WhisperModel
from unique_asr.models.checkpoint import from_hf_state_dict
from unique_asr.models.cross_memory import PagedCrossMemory, SoftGateConfig

SELECT_MODES = scores_for("select")  # every score the decode kernel runs (the registry)

CONFIG = dataclasses.replace(TINY, n_audio_ctx=60)
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: the interpreter (tests/conftest.py)
S = 8
ALL = SparsityConfig(mode="unique", page_size=S, budget=64)  # 8 pages >= the 8 held pages


def random_model(seed: int | None = None, dtype=torch.float32) -> WhisperModel:
    seed = int(torch.randint(0, 2**31 - 1, ()).item()) if seed is None else seed
    hf = hf_whisper(CONFIG, seed=seed)
    model = WhisperModel(WhisperConfig.from_hf(hf.config)).eval()
    model.load_state_dict(from_hf_state_dict(hf.state_dict(), model.config), strict=True)
    return model.to(dtype)


def run(model, enc, tokens, sparsity=None, *, prefill=3, index=None):
    """Prefill tokens[:, :prefill], then one token per step; index (int64) expands rows after the prefill.
    Returns logits [B', T, V]."""
    cross = model.cross_memory(enc, sparsity=sparsity)
    cache = SelfAttentionCache.allocate(model.config, enc.shape[0], tokens.shape[1], device=enc.device,
                                        dtype=enc.dtype)
    out = [model.decode(tokens[:, :prefill], cache, cross)]
    if index is not None:
        cache = SelfAttentionCache(cache.k.index_select(1, index), cache.v.index_select(1, index),
                                   cache.lengths.index_select(0, index))
        cross, tokens = cross.index_select(index), tokens.index_select(0, index)
        out = [out[0].index_select(0, index)]
    out += [model.decode(tokens[:, t:t + 1], cache, cross) for t in range(prefill, tokens.shape[1])]
    return torch.cat(out, dim=1)


def inputs(batch=2, length=7, dtype=torch.float32):
    mel = torch.randn(batch, CONFIG.n_mels, 2 * CONFIG.n_audio_ctx)
    return mel.to(dtype), torch.randint(0, CONFIG.n_vocab, (batch, length))


def rel(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@torch.no_grad()
@pytest.mark.parametrize("mode", SELECT_MODES)
@pytest.mark.parametrize("backend", ["dense", "sparse-torch"])
def test_full_budget_equals_dense(mode, backend):
    model = random_model()
    mel, tokens = inputs()
    enc = model.encode(mel)
    dense = run(model, enc, tokens)
    sparse = run(model, enc, tokens, dataclasses.replace(ALL, mode=mode, backend=backend))
    torch.testing.assert_close(sparse, dense, atol=2e-5, rtol=1e-5)


@torch.no_grad()
def test_triton_backend_full_budget_and_agreement():
    """fp16 under the Triton interpreter: full budget equals dense; small budgets agree with sparse-torch."""
    model = random_model(dtype=torch.float16).to(TRITON_DEVICE)
    mel, tokens = (t.to(TRITON_DEVICE) for t in inputs(length=5, dtype=torch.float16))
    enc = model.encode(mel)
    dense = run(model, enc, tokens)
    full = run(model, enc, tokens, dataclasses.replace(ALL, backend="sparse-triton"))
    assert rel(full, dense) < 2e-3
    small = SparsityConfig(mode="unique", page_size=S, budget=3 * S, keep_last=True)
    fast = run(model, enc, tokens, dataclasses.replace(small, backend="sparse-triton"))
    ref = run(model, enc, tokens, dataclasses.replace(small, backend="sparse-torch"))
    assert rel(fast, ref) < 2e-3
    assert rel(fast, dense) > 10 * rel(fast, ref)  # the small budget really dropped pages


@torch.no_grad()
def test_small_budget_differs_from_dense_but_stays_close():
    model = random_model()
    mel, tokens = inputs()
    enc = model.encode(mel)
    dense = run(model, enc, tokens)
    errors = {b: rel(run(model, enc, tokens, SparsityConfig(mode="unique", page_size=S, budget=b)), dense)
              for b in (2 * S, 4 * S, 6 * S)}
    assert all(1e-4 < e < 0.5 for e in errors.values()), errors
    assert errors[6 * S] < errors[2 * S], errors
    # the first dense layer and keep_first/keep_last change the result (the options reach the entry point)
    base = SparsityConfig(mode="unique", page_size=S, budget=2 * S)
    for option in ({"dense_layers": 1}, {"keep_first": True}):
        changed = run(model, enc, tokens, dataclasses.replace(base, **option))
        assert rel(changed, run(model, enc, tokens, base)) > 1e-6


@torch.no_grad()
@pytest.mark.parametrize("backend", ["sparse-torch", "sparse-triton"])
@pytest.mark.parametrize("code", ["fp8", "int8"])
def test_coded_statistics_option_reaches_the_memory(backend, code):
    """SparsityConfig(stats_dtype="fp8" / "int8"): the cross memory keeps e4m3 / int8 key means with a
    per-(page, head) scale; at a budget covering every page the output is dense's; at a small budget it stays
    far closer to the pool-dtype selection than that selection is to dense (the codes change few picks)."""
    triton = backend == "sparse-triton"  # fp16: the Triton attention takes 16-bit pools
    device, dtype = (TRITON_DEVICE, torch.float16) if triton else ("cpu", torch.float32)
    model = random_model(dtype=dtype).to(device)
    mel, tokens = (t.to(device) for t in inputs(length=5, dtype=dtype))
    enc = model.encode(mel)
    cross = model.cross_memory(enc, sparsity=dataclasses.replace(ALL, stats_dtype=code, backend=backend))
    assert cross.cache.mean.dtype == {"fp8": torch.float8_e4m3fn, "int8": torch.int8}[code]
    assert cross.cache.scale is not None
    dense = run(model, enc, tokens)
    full = run(model, enc, tokens, dataclasses.replace(ALL, stats_dtype=code, backend=backend))
    assert rel(full, dense) < (2e-3 if triton else 1e-4)
    small = SparsityConfig(mode="unique", page_size=S, budget=3 * S, backend=backend)
    pool = run(model, enc, tokens, small)
    coded = run(model, enc, tokens, dataclasses.replace(small, stats_dtype=code))
    assert rel(coded, pool) < 0.5 * rel(pool, dense), (rel(coded, pool), rel(pool, dense))
    with pytest.raises(ValueError, match="stats_dtype"):
        SparsityConfig(stats_dtype="int4")


@torch.no_grad()
def test_prefill_queries_are_sparse_per_query():
    """A T-token prefill gives each query its own pages: equal to feeding the tokens one at a time."""
    model = random_model()
    mel, tokens = inputs(length=6)
    enc = model.encode(mel)
    sparsity = SparsityConfig(mode="unique", page_size=S, budget=2 * S)
    at_once = run(model, enc, tokens, sparsity, prefill=6)
    torch.testing.assert_close(at_once, run(model, enc, tokens, sparsity, prefill=1), atol=2e-5, rtol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("budget", [2 * S, 64])
def test_beam_expansion_and_reorder_use_the_page_table(budget):
    model = random_model()
    mel, tokens = inputs()
    enc = model.encode(mel)
    sparsity = SparsityConfig(mode="unique", page_size=S, budget=budget)
    index = torch.tensor([1, 0, 1, 1])
    expanded = run(model, enc, tokens, sparsity, index=index)
    alone = run(model, enc.index_select(0, index), tokens.index_select(0, index), sparsity)
    torch.testing.assert_close(expanded, alone, atol=2e-5, rtol=1e-5)
    # in-place reorder: rows swap windows; the pools are untouched, only the page table moves
    cross = model.cross_memory(enc, sparsity=sparsity)
    assert isinstance(cross, PagedCrossMemory)
    pools = cross.cache.k_pool.clone()
    table = cross.page_table.clone()
    cross.reorder(torch.tensor([1, 0]))
    assert torch.equal(cross.page_table, table.flip(0)) and torch.equal(cross.cache.k_pool, pools)
    swapped = run_with(model, cross, tokens)
    torch.testing.assert_close(swapped, run(model, enc.flip(0), tokens, sparsity), atol=2e-5, rtol=1e-5)
    dense = model.cross_memory(enc)
    dense.reorder(torch.tensor([1, 0]))
    expected = run(model, enc.flip(0), tokens)
    torch.testing.assert_close(run_with(model, dense, tokens), expected, atol=2e-5, rtol=1e-5)


def run_with(model, cross, tokens):
    cache = SelfAttentionCache.allocate(model.config, cross.batch, tokens.shape[1])
    return model.decode(tokens, cache, cross)


@torch.no_grad()
def test_refill_reuses_the_pools():
    """cross_memory(out=memory) writes a new window batch into the same tensors (CUDA-graph friendly)."""
    model = random_model()
    sparsity = SparsityConfig(mode="quest", page_size=S, budget=3 * S)
    mel_a, tokens = inputs()
    mel_b, _ = inputs()
    memory = model.cross_memory(model.encode(mel_a), sparsity=sparsity)
    tensors = (memory.cache.k_pool, memory.cache.kmax, memory.page_table, memory.lengths)
    again = model.cross_memory(model.encode(mel_b), sparsity=sparsity, out=memory)
    assert again is memory and all(a is b for a, b in zip(tensors, (memory.cache.k_pool, memory.cache.kmax,
                                                                    memory.page_table, memory.lengths)))
    fresh = model.cross_memory(model.encode(mel_b), sparsity=sparsity)
    torch.testing.assert_close(run_with(model, memory, tokens), run_with(model, fresh, tokens))


def test_model_default_sparsity_shares_weights():
    model = random_model(seed=0)
    sparse = model.with_sparsity(ALL)
    assert model.sparsity == SparsityConfig() and sparse.sparsity == ALL
    assert sparse.decoder is model.decoder
    with torch.no_grad():
        enc = model.encode(inputs()[0])
        assert isinstance(sparse.cross_memory(enc), PagedCrossMemory)
        assert not isinstance(model.cross_memory(enc), PagedCrossMemory)


def test_forward_train_dense_soft_and_hard():
    model = random_model()
    mel, tokens = inputs(length=6)
    with torch.no_grad():
        dense = run(model, model.encode(mel), tokens, prefill=6)
        unique = SparsityConfig(mode="unique", page_size=S, budget=3 * S)
        sparse = run(model, model.encode(mel), tokens, unique, prefill=6)
    torch.testing.assert_close(model.forward_train(mel, tokens), dense, atol=2e-5, rtol=1e-5)
    full = SoftGateConfig(mode="soft", tau=1.0, page_size=S, budget=64)
    torch.testing.assert_close(model.forward_train(mel, tokens, full), dense, atol=2e-5, rtol=1e-5)
    # the hard training mask selects exactly the pages UNIQUE selects at inference
    hard = SoftGateConfig(mode="hard", page_size=S, budget=3 * S)
    torch.testing.assert_close(model.forward_train(mel, tokens, hard), sparse, atol=1e-4, rtol=1e-4)

    soft = SoftGateConfig(mode="soft", tau=0.5, page_size=S, budget=3 * S)
    logits = model.forward_train(mel, tokens, soft)
    assert rel(logits, dense) > 1e-4
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
    loss.backward()
    for block in model.decoder.blocks:
        for proj in (block.cross_attn.q, block.cross_attn.k):
            assert proj.weight.grad is not None and torch.isfinite(proj.weight.grad).all()
            assert proj.weight.grad.abs().sum() > 0


def test_forward_train_triton_kernel_matches_naive():
    model = random_model().to(TRITON_DEVICE)
    mel, tokens = (t.to(TRITON_DEVICE) for t in inputs(batch=1, length=4))
    gate = SoftGateConfig(mode="soft", tau=0.5, page_size=S, budget=2 * S)
    naive = model.forward_train(mel, tokens, dataclasses.replace(gate, kernel="naive"))
    fast = model.forward_train(mel, tokens, dataclasses.replace(gate, kernel="triton"))
    assert rel(fast, naive) < 1e-3  # GPU tl.dot may round through tf32


def test_soft_gate_config_checks():
    with pytest.raises(ValueError):
        SoftGateConfig(mode="sometimes")
    with pytest.raises(ValueError):
        SoftGateConfig(page_size=12)
    with pytest.raises(ValueError):
        SoftGateConfig(tau=0.0)


# ---- real weights: tiny.en on recorded speech ------------------------------------------------------------


@pytest.fixture(scope="module")
def speech_mel():
    """Log-mel of a recorded 7.1 s utterance (tests/data/speech)."""
    import speech_data
    from transformers import WhisperFeatureExtractor

    audio = speech_data.clip("austen_0870")
    return torch.from_numpy(WhisperFeatureExtractor(feature_size=80)(audio, sampling_rate=16000,
                                                                     return_tensors="np").input_features)


def _greedy_words(model, tokenizer, enc, sparsity) -> list[str]:
    text = greedy_text(model, tokenizer, enc, sparsity, max_tokens=40).lower()
    return "".join(c for c in text if c.isalnum() or c.isspace()).split()


@torch.no_grad()
def test_tiny_en_unique_quarter_budget_decodes_the_same_words(speech_mel):
    from unique_asr.models import load_whisper

    model, tokenizer, _ = load_whisper("tiny.en")
    enc = model.encode(speech_mel)
    dense = _greedy_words(model, tokenizer, enc, SparsityConfig())
    unique = _greedy_words(model, tokenizer, enc, SparsityConfig(mode="unique", page_size=16, budget=384))
    assert len(dense) >= 12 and unique == dense


# ---- GPU: captured decode step --------------------------------------------------------------------------

GRAPH_ARMS = [SparsityConfig(), SparsityConfig(mode="unique", page_size=S, budget=3 * S),
              SparsityConfig(mode="quest", page_size=S, budget=3 * S, keep_last=True)]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("sparsity", GRAPH_ARMS)
@torch.no_grad()
def test_captured_step_replays_eager_decode(sparsity):
    from unique_asr.models.graph_step import CapturedDecodeStep

    model = random_model(dtype=torch.float16).cuda()
    mel, tokens = inputs(batch=3, length=8, dtype=torch.float16)
    mel, tokens = mel.cuda(), tokens.cuda()
    ref = run(model, model.encode(mel), tokens, sparsity)
    cross = model.cross_memory(model.encode(torch.randn_like(mel)), sparsity=sparsity)  # replaced below
    cache = SelfAttentionCache.allocate(model.config, 3, 8, device="cuda", dtype=torch.float16)
    step = CapturedDecodeStep(model, cache, cross)
    if sparsity.sparse:
        model.cross_memory(model.encode(mel), sparsity=sparsity, out=cross)  # new windows, same pools
    else:
        fresh = model.cross_memory(model.encode(mel))
        cross.k.copy_(fresh.k)
        cross.v.copy_(fresh.v)
    out = [model.decode(tokens[:, :3], cache, cross)]
    torch.cuda.set_sync_debug_mode("error")  # the replayed step, and the eager T = 1 step, never sync
    try:
        out += [step(tokens[:, t:t + 1]).clone() for t in range(3, 8)]
        model.decode(tokens[:, 7:8], SelfAttentionCache.allocate(model.config, 3, 8, device="cuda",
                                                                 dtype=torch.float16), cross)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert int(cache.lengths[0]) == 8
    assert rel(torch.cat(out, 1), ref) < 1e-3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("sparsity", GRAPH_ARMS[:2])
@torch.no_grad()
def test_captured_step_keeps_the_memory_it_reads_alive(sparsity):
    """The caller may drop its own references to the caches: replay must still read them (it once read freed,
    then unmapped memory: an illegal address on the H200)."""
    import gc

    from unique_asr.models.graph_step import CapturedDecodeStep

    model = random_model(dtype=torch.float16).cuda()
    mel, tokens = inputs(batch=3, length=8, dtype=torch.float16)
    mel, tokens = mel.cuda(), tokens.cuda()
    ref = run(model, model.encode(mel), tokens, sparsity)
    cache = SelfAttentionCache.allocate(model.config, 3, 8, device="cuda", dtype=torch.float16)
    cross = model.cross_memory(model.encode(mel), sparsity=sparsity)
    model.decode(tokens[:, :3], cache, cross)
    step = CapturedDecodeStep(model, cache, cross)
    del cache, cross
    gc.collect()
    torch.cuda.empty_cache()
    junk = torch.full((64, 2**20), 7.0, device="cuda")  # reuses freed blocks, if any were freed
    out = torch.cat([step(tokens[:, t : t + 1]).clone() for t in range(3, 8)], 1)
    assert junk.sum() > 0 and rel(out, ref[:, 3:]) < 1e-3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("vocab", [51865, 51864, 128])
def test_padded_logits_equal_the_plain_product(vocab):
    model = WhisperModel(dataclasses.replace(TINY, n_vocab=vocab)).cuda().half()
    w = model.decoder.tok_emb.weight
    with torch.no_grad():
        w.normal_()
    h = torch.randn(5, 3, TINY.n_text_state, device="cuda").half()
    with torch.inference_mode():
        got = model._logits(h)
    assert got.shape == (5, 3, vocab) and got.dtype == torch.float32 and got.is_contiguous()
    torch.testing.assert_close(got, (h @ w.T).float(), atol=1e-2, rtol=1e-3)
    with torch.no_grad():
        w.mul_(2)  # an in-place update (a training step) must not leave a stale padded copy behind
        torch.testing.assert_close(model._logits(h), (h @ w.T).float(), atol=2e-2, rtol=1e-3)
    view = model.with_sparsity(SparsityConfig(mode="unique", page_size=8, budget=64))
    with torch.inference_mode():
        view._logits(h)
    assert view.decoder._padded_weight is model.decoder._padded_weight  # one padded copy per model
    assert model._logits(h.requires_grad_()).requires_grad  # training keeps the plain, differentiable product
