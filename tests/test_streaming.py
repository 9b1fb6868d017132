"""Streaming long-form speech-LLM driver on tiny random models: dense streaming == one teacher-forced full
forward over the same context; page eviction keeps memory bounded and the sink; real audio through log-mel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unique_asr.cache import CacheFullError
from unique_asr.config import SparsityConfig
from unique_asr.models.llm import LLMConfig, allocate_cache
from unique_asr.models.speech_llm import ProjectorConfig, SpeechLLM, SpeechLLMConfig, encoder_config
from unique_asr.streaming import StreamingOptions, StreamingSession, evict_pages, transcribe_stream

AUDIO_ID, EOS = 3, 2
PROMPT, PREFIX, SUFFIX = (1, 9, 10, 11, 12), (13, 14), (15,)


def tiny_model(ctx: int = 16, seed: int | None = None, head_dim: int = 8) -> SpeechLLM:
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, ())) if seed is None else seed)
    llm = LLMConfig(vocab_size=50, hidden_size=4 * head_dim, intermediate_size=48, num_layers=2, num_heads=4,
                    num_kv_heads=2, head_dim=head_dim, qkv_bias=True)
    enc = encoder_config(n_mels=80, n_audio_ctx=ctx, d_model=16, heads=2, layers=1)
    model = SpeechLLM(SpeechLLMConfig(enc, llm, ProjectorConfig("stack", 4), AUDIO_ID)).eval()
    with torch.no_grad():  # spread the logits so greedy choices are not near-ties
        model.llm.lm_head.weight.mul_(20)
    return model


def options(**kw) -> StreamingOptions:
    base = dict(prompt_ids=PROMPT, chunk_prefix_ids=PREFIX, chunk_suffix_ids=SUFFIX, eos_ids=(EOS,),
                max_new_tokens=4, num_pages=64, sparsity=SparsityConfig(mode="dense", page_size=4, budget=4))
    return StreamingOptions(**{**base, **kw})


@torch.no_grad()
def full_forward_logits(model: SpeechLLM, ids: list[int], audio: torch.Tensor,
                        slots: list[int] | None = None) -> torch.Tensor:
    """Teacher-forced logits [T, V] of the whole context in one prefill (fresh cache). `slots`: the positions
    that hold audio (default: every audio_token_id; a random model may also emit that id as text)."""
    cache = allocate_cache(model.llm.config, SparsityConfig(page_size=4, budget=4), batch=1, num_pages=64)
    if slots is None:
        x = model.embed(torch.tensor([ids]), audio)
    else:
        x = model.llm.embed_tokens(torch.tensor([ids])).clone()
        x[0, slots] = audio.to(x.dtype)
    return model.llm.logits(model.llm.prefill(x, cache, torch.zeros(1, dtype=torch.int64)))[0]


@pytest.mark.parametrize("sparsity", [SparsityConfig(mode="dense", page_size=4, budget=4),
                                      SparsityConfig(mode="unique", page_size=4, budget=256)])
def test_streaming_equals_full_forward(sparsity):
    model = tiny_model()
    session = StreamingSession(model, options(sparsity=sparsity))
    ids, audio, expected, slots = list(PROMPT), [], [], []
    for _ in range(3):
        mel = torch.randn(1, 80, 32)
        result = session.feed(mel, return_logits=True)
        audio.append(model.audio_embeddings(mel).flatten(0, 1))
        chunk = [*PREFIX, *[AUDIO_ID] * 4, *SUFFIX]
        slots += range(len(ids) + len(PREFIX), len(ids) + len(PREFIX) + 4)
        expected.append((len(ids) + len(chunk) - 1, result))  # logits of the last prompt token pick token 0
        ids += chunk + result.tokens
    assert session.position == len(ids) == int(session.cache.lengths[0])
    full = full_forward_logits(model, ids, torch.cat(audio), slots)
    for start, result in expected:
        n = len(result.tokens)
        torch.testing.assert_close(result.logits, full[start:start + n], atol=2e-4, rtol=1e-4)
        assert result.tokens == full[start:start + n].argmax(-1).tolist()
        assert result.tokens[-1] == EOS or n == 4


def test_sparse_streaming_runs_and_differs_from_dense():
    model = tiny_model()
    mels = [torch.randn(1, 80, 32) for _ in range(4)]
    runs = {}
    for mode in ("dense", "unique"):
        session = StreamingSession(model, options(sparsity=SparsityConfig(mode=mode, page_size=4, budget=8),
                                                  max_new_tokens=6))
        runs[mode] = [session.feed(m, return_logits=True).logits for m in mels]
    first = min(len(runs["dense"][-1]), len(runs["unique"][-1]))
    assert (runs["dense"][-1][:first] - runs["unique"][-1][:first]).abs().max() > 1e-4


def test_evict_pages_moves_the_table_and_frees_pages():
    model = tiny_model()
    cache = allocate_cache(model.llm.config, SparsityConfig(mode="unique", page_size=4, budget=8), batch=2,
                           num_pages=32)
    x = torch.randn(2, 22, 32)
    model.llm.prefill(x, cache, torch.zeros(2, dtype=torch.int64))
    table, free = cache.page_table.clone(), cache.num_free_pages
    k_before = cache.k_pool[0][table[1, :6].long()].clone()
    mean_before = cache.mean[0][table[1, :6].long()].clone()
    evict_pages(cache, 1, first=1, count=3)
    assert cache.lengths.tolist() == [22, 10] and cache.num_free_pages == free + 3
    assert cache.page_table[0].tolist() == table[0].tolist()
    kept = cache.page_table[1, :3].long()
    assert kept.tolist() == table[1, [0, 4, 5]].tolist() and (cache.page_table[1, 3:] == -1).all()
    torch.testing.assert_close(cache.k_pool[0][kept], k_before[[0, 4, 5]])
    torch.testing.assert_close(cache.mean[0][kept], mean_before[[0, 4, 5]])
    with pytest.raises(ValueError):
        evict_pages(cache, 1, first=1, count=2)  # would take the open last page
    plan = cache.reserve([0, 7])  # appending continues on the shifted table
    assert cache.lengths.tolist() == [22, 17] and plan.num_tokens == 7


def test_eviction_keeps_memory_bounded_and_the_sink():
    model = tiny_model()
    session = StreamingSession(model, options(max_pages=10, max_new_tokens=5))
    sink = session.cache.page_table[0, :2].clone()
    n = len(PROMPT)  # the prompt's 5 tokens: page 0 and the first slot of page 1 (later tokens fill the rest)
    sink_k = session.cache.k_pool[:, sink.long()].flatten(1, 2)[:, :n].clone()
    fed = len(PROMPT)
    for _ in range(8):  # ~12 tokens a chunk, 96 in all: far beyond 10 pages of 4
        result = session.feed(torch.randn(1, 80, 32))
        fed += len(PREFIX) + 4 + len(SUFFIX) + len(result.tokens)
        held = -(-int(session.cache.lengths[0]) // 4)
        assert held <= 10 and session.cache.num_free_pages >= 64 - 10
    assert session.position == fed > 40
    assert torch.equal(session.cache.page_table[0, :2], sink)
    torch.testing.assert_close(session.cache.k_pool[:, sink.long()].flatten(1, 2)[:, :n], sink_k)
    with pytest.raises(CacheFullError):
        StreamingSession(model, options(max_pages=3, max_new_tokens=5)).feed(torch.randn(1, 80, 32))


def test_transcribe_stream_on_audio_array():
    """Whisper-shaped encoder input (1500 frames from a 30 s log-mel) fed from a 65 s array in 30 s windows."""
    model = tiny_model(ctx=1500, seed=0)
    session = StreamingSession(model, options(num_pages=512))
    t = np.arange(65 * 16000) / 16000
    audio = (0.1 * np.sin(2 * np.pi * 440 * t) * (t % 2 < 1)).astype(np.float32)
    out = list(transcribe_stream(session, audio))
    assert [(a, b) for a, b, _ in out] == [(0.0, 30.0), (30.0, 60.0), (60.0, 65.0)]
    assert all(1 <= len(tokens) <= 4 for _, _, tokens in out)
    assert int(session.cache.lengths[0]) == len(PROMPT) + sum(len(PREFIX) + 375 + len(SUFFIX) + len(t) for *_, t in out)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_streaming_on_cuda_triton_bf16():
    """Triton append, selection and sparse decode on the GPU: full budget == dense; a small budget runs."""
    model = tiny_model(head_dim=16).cuda()  # the Triton decode kernel takes head dims 16..256
    mels = [torch.randn(1, 80, 32, device="cuda") for _ in range(3)]
    runs = {}
    for name, sparsity in {"dense": SparsityConfig(mode="dense", page_size=4, budget=4, backend="sparse-triton"),
                           "full": SparsityConfig(mode="unique", page_size=4, budget=512, backend="sparse-triton"),
                           "small": SparsityConfig(mode="unique", page_size=4, budget=8, backend="sparse-triton")}.items():
        session = StreamingSession(model, options(sparsity=sparsity, cache_dtype=torch.bfloat16), device="cuda")
        runs[name] = [session.feed(m, return_logits=True) for m in mels]
    dense, full = runs["dense"][0], runs["full"][0]  # later chunks may diverge on a bf16 near-tie
    n = min(len(dense.tokens), len(full.tokens))
    torch.testing.assert_close(full.logits[:n], dense.logits[:n], atol=5e-2, rtol=2e-2)
    assert all(torch.isfinite(r.logits).all() for run in runs.values() for r in run)
