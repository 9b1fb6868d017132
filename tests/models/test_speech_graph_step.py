"""The speech-LLM decode step through the family interface's two-phase step (PagedRows.plan_step on the host, the
device half `run_planned` captured by CapturedDecodeStep): on CPU, the contract the graph relies on (the device
half run twice on one plan equals the eager step: same logits, same cache); on CUDA, graph replays equal eager
steps, step by step and for whole recordings decoded together (continuous batching, eager tail)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from speech_checkpoints import voxtral
from speech_data import AUSTEN, clip

import unique_asr
from unique_asr.config import SparsityConfig
from unique_asr.models.paged_rows import PagedRows
from unique_asr.stream_decoding import RowDecoder, WindowJob, WindowResult
from unique_asr.stream_transcribe import Recording, _vad

MAX_NEW = 6


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("voxtral")
    voxtral(root, seed=3, head_dim=16)  # the Triton kernels take power-of-two head dims only
    return str(root)


def _prefilled(model, rows: int, seed: int, pages: int = 16) -> PagedRows:
    """`rows` rows holding the prompt's head and different random embeddings (different lengths)."""
    state = PagedRows.allocate(model, rows, pages)
    gen = torch.Generator().manual_seed(seed)
    d = model.net.config.llm.hidden_size
    for row in range(rows):
        state.reset(row, model.prompt(None).prompt_ids)
        x = torch.randn(1, 5 + 3 * row, d, generator=gen) * 0.5
        state.prefill(row, x.to(device=state.cache.device, dtype=next(model.parameters()).dtype))
    return state


def _cache_tensors(state: PagedRows) -> list[torch.Tensor]:
    cache = state.cache
    return [cache.k_pool, cache.v_pool, cache.lengths, cache.page_table,
            *(t for t in (cache.mean, cache.std, cache.kmin, cache.kmax) if t is not None)]


@pytest.mark.parametrize("mode", ["dense", "unique"])
def test_device_half_twice_on_one_plan_equals_the_eager_step(folder, mode):
    sparsity = SparsityConfig(mode=mode, page_size=4, budget=8)
    model = unique_asr.load_model(folder, device="cpu").bundle.model.with_sparsity(sparsity)
    # 100 pages per row: a step reads only the first 64 page-table columns (MIN_WIDTH)
    eager, planned = _prefilled(model, 3, seed=1, pages=100), _prefilled(model, 3, seed=1, pages=100)
    tokens = torch.tensor([7, 11, 13])
    for step in range(6):  # crosses page boundaries and both accumulator parities
        rows = [0, 1, 2] if step != 3 else [0, 2]  # a step over some rows (continuous batching's tail)
        want = eager.step(tokens[rows], rows)
        key = planned.plan_step(None if len(rows) == 3 else rows)
        assert key[1] == 64 and key[2:] == (() if len(rows) == 3 else (2,))  # width; the row count of a tail step
        first = planned.run_planned(tokens[rows]).clone()
        planned.planned = (*planned.planned[:2], 100)  # the whole table: same result
        again = planned.run_planned(tokens[rows])
        torch.testing.assert_close(first, want, rtol=0, atol=0)
        torch.testing.assert_close(again, want, rtol=1e-6, atol=1e-6)
        assert planned.positions == eager.positions
        for a, b in zip(_cache_tensors(planned), _cache_tensors(eager)):
            assert torch.equal(a, b)
        tokens = want.argmax(-1).repeat(2)[:3] if len(rows) == 2 else want.argmax(-1)


def test_plans_of_one_key_put_the_device_inputs_at_the_same_addresses(folder):
    """What a replayed graph of a step over some rows relies on: every plan of one key (parity, width, row count)
    hands the device half its rows, positions, work list and idle rows in tensors at the same addresses (the
    host writes new values into them), whichever rows step."""
    model = unique_asr.load_model(folder, device="cpu").bundle.model
    state = _prefilled(model, 4, seed=7, pages=100)

    def inputs(rows):
        key = state.plan_step(rows)
        plan, index, _ = state.planned
        out = (key, index.data_ptr(), index.tolist(), plan.work.data_ptr(), plan.idle.data_ptr(), plan.idle.tolist(),
               state.position_buffer.data_ptr())
        state.run_planned(torch.tensor([5] * len(rows)))
        return out

    first, second, third = inputs([0, 2]), inputs([1, 3]), inputs([0, 2])
    assert first[0][2:] == second[0][2:] == (2,) and first[0] == third[0]  # parity flips every step
    assert first[1] == second[1] == third[1] and first[3] == second[3] == third[3] and first[4] == second[4]
    assert first[6] == second[6]
    assert (first[2], first[5], second[2], second[5]) == ([0, 2], [1, 3], [1, 3], [0, 2])


def test_rows_prefilled_together_equal_one_at_a_time(folder):
    model = unique_asr.load_model(folder, device="cpu").bundle.model
    together, alone = _prefilled(model, 3, seed=4), _prefilled(model, 3, seed=4)
    x = torch.randn(2, 7, model.net.config.llm.hidden_size, generator=torch.Generator().manual_seed(5))
    got = together.prefill_rows([0, 2], x)
    want = torch.stack([alone.prefill(0, x[:1]), alone.prefill(2, x[1:])])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    assert together.positions == alone.positions
    for a, b in zip(_cache_tensors(together), _cache_tensors(alone)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_prefill_groups_rows_of_equal_length():
    """`_prefill_groups`: rows holding the same number of tokens form one group (indices a slice when adjacent),
    split where their gathered K + V would pass PREFILL_GATHER_BYTES."""
    from unique_asr.models.llm import PREFILL_GATHER_BYTES, _prefill_groups

    held = {3: 40, 5: 12, 6: 40, 9: 40}
    groups = _prefill_groups([3, 5, 6, 9], held, 8, torch.device("cpu"))
    assert [(idx if isinstance(idx, slice) else idx.tolist(), rows.tolist(), n) for idx, rows, n in groups] == [
        ([0, 2, 3], [3, 6, 9], 40), (slice(1, 2), [5], 12)]
    two_rows = PREFILL_GATHER_BYTES // (2 * 40)  # bytes a token at which two rows of 40 tokens fit a group
    groups = _prefill_groups([6, 9, 3], held, two_rows, torch.device("cpu"))
    assert [(idx, rows.tolist()) for idx, rows, _ in groups] == [(slice(0, 2), [6, 9]), (slice(2, 3), [3])]


def test_prefill_keys_are_bucketed_only_where_attention_plans_per_shape(folder, monkeypatch):
    """The default bucket pads key lengths on CUDA (cuDNN builds a graph per shape) and not on a CPU, where the
    padding would be attention work for nothing; it never passes the page table."""
    from unique_asr.models import llm

    model = unique_asr.load_model(folder, device="cpu").bundle.model
    cache = PagedRows.allocate(model, 1, 4096).cache
    assert llm.PREFILL_KEY_BUCKET and "cpu" not in llm.PREFILL_KEY_BUCKET_DEVICES
    assert llm._key_bucket(1001, cache) == 1001
    monkeypatch.setattr(llm, "PREFILL_KEY_BUCKET_DEVICES", ("cpu",))
    assert llm._key_bucket(1001, cache) == llm.PREFILL_KEY_BUCKET
    assert llm._key_bucket(cache.max_pages * cache.page_size - 3, cache) == cache.max_pages * cache.page_size


@pytest.mark.parametrize("cap, bucket", [(None, 0), (1, 0), (None, 24), (None, 64), (None, 1000)])
def test_rows_of_equal_length_prefilled_in_one_call_equal_one_at_a_time(folder, monkeypatch, cap, bucket):
    """Rows holding equal numbers of tokens (not adjacent) and one longer row prefilled together: their batched
    attention calls (cap 1: one row a call; bucket: key lengths padded to a multiple of it, past the row's pages
    and, at 1000, clamped to the page table) equal prefilling one row at a time, outputs and caches."""
    from unique_asr.models import llm

    if cap:
        monkeypatch.setattr(llm, "PREFILL_GATHER_BYTES", cap)
    model = unique_asr.load_model(folder, device="cpu").bundle.model
    d = model.net.config.llm.hidden_size
    gen = torch.Generator().manual_seed(6)
    heads = [torch.randn(1, n, d, generator=gen) * 0.5 for n in (9, 17, 9, 9)]

    def state():
        rows = PagedRows.allocate(model, 4, 16)
        for row, x in enumerate(heads):
            rows.reset(row, model.prompt(None).prompt_ids)
            rows.prefill(row, x)
        return rows

    together, alone = state(), state()
    x = torch.randn(4, 6, d, generator=gen)
    want = torch.stack([alone.prefill(row, x[row:row + 1]) for row in range(4)])
    monkeypatch.setattr(llm, "PREFILL_KEY_BUCKET", bucket)
    monkeypatch.setattr(llm, "PREFILL_KEY_BUCKET_DEVICES", ("cpu", "cuda"))
    got = together.prefill_rows([0, 1, 2, 3], x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    for a, b in zip(_cache_tensors(together), _cache_tensors(alone)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_run_planned_needs_a_plan(folder):
    model = unique_asr.load_model(folder, device="cpu").bundle.model
    with pytest.raises(RuntimeError, match="plan_step"):
        PagedRows.allocate(model, 1, 4).run_planned(torch.tensor([1]))


def _decode(model, paths, rows: int, cuda_graph: bool, sparsity: SparsityConfig, beam: int = 1):
    options = unique_asr.TranscribeOptions(batch_size=rows, sparsity=sparsity,
                                           decode=unique_asr.DecodeOptions(max_new_tokens=MAX_NEW))
    bundle = model.speech_bundle(options)
    recordings = [Recording(bundle, p, options, None, _vad(bundle, options)) for p in paths]
    decoder = RowDecoder(bundle.model, rows, None, MAX_NEW, cuda_graph=cuda_graph, beam=beam)
    results = [(str(e.recording.source), e.tokens, round(e.sum_logprob, 3))
               for e in decoder.run(recordings) if isinstance(e, WindowResult)]
    return sorted(results), decoder


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["dense", "unique", "window"])
def test_graph_replays_equal_eager_steps_on_cuda(folder, mode):
    sparsity = SparsityConfig(mode=mode, page_size=4, budget=8)
    model = unique_asr.load_model(folder, device="cuda", dtype="bfloat16").bundle.model.with_sparsity(sparsity)
    from unique_asr.models.graph_step import CapturedDecodeStep

    eager, graphed = _prefilled(model, 3, seed=2), _prefilled(model, 3, seed=2)
    step = CapturedDecodeStep(model, graphed, None)
    tokens = torch.tensor([7, 11, 13], device="cuda")
    for i in range(12):  # graphs per accumulator parity, and per row count for steps over some rows (the tail)
        rows = [0, 2] if i % 3 == 2 else [0, 1, 2]
        want = eager.step(tokens[rows], rows)
        got = step(tokens[rows][:, None], None if len(rows) == 3 else rows)[:, 0]
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        for a, b in zip(_cache_tensors(graphed), _cache_tensors(eager)):
            assert torch.equal(a, b)
        tokens[rows] = want.argmax(-1)
    assert {key[2:] for key in step.graphs} == {(), (2,)} and len(step.graphs) <= 4
    with pytest.raises(ValueError, match="rows"):
        step(tokens[:2, None])  # two tokens for a step over every row


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_recordings_decoded_together_with_graphs_equal_eager_on_cuda(folder, tmp_path):
    model = unique_asr.load_model(folder, device="cuda", dtype="bfloat16")
    sparsity = SparsityConfig(mode="unique", page_size=4, budget=16)
    paths = []
    for i, parts in enumerate([[AUSTEN[0]], [AUSTEN[1], AUSTEN[2]], [AUSTEN[3]]]):
        path = tmp_path / f"rec{i}.flac"
        sf.write(path, np.concatenate([clip(p) for p in parts]), 16000)
        paths.append(str(path))
    for beam in (1, 3):  # beams: rows reordered between replays, shared pages copied on write in the host half
        eager, _ = _decode(model, paths, 2, False, sparsity, beam)
        graphed, decoder = _decode(model, paths, 2, True, sparsity, beam)
        assert decoder.captured is not None and decoder.captured.graphs  # the graph path ran
        assert graphed == eager and len(eager) >= 4
        cache = decoder.state.cache
        assert cache.references().sum() == 0 and cache.num_free_pages == cache.k_pool.shape[1]


class _Windows:
    """A recording given as its windows' audio (RowDecoder takes any object with jobs())."""

    def __init__(self, windows):
        self.windows = windows

    def jobs(self):
        return (WindowJob(audio) for audio in self.windows)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_greedy_rows_never_make_the_host_wait_for_the_device(folder):
    """The greedy loop queues a step before reading the previous step's choices (one pinned copy behind an
    event): no implicit synchronisation anywhere in a run (prefills, audio tokens, page plans, the eager tail),
    once the kernels are compiled and the graphs captured by two runs of the same recordings (the step's graph is
    keyed by the cache's accumulator parity, which a run with an odd number of steps flips for the next)."""
    model = unique_asr.load_model(folder, device="cuda", dtype="bfloat16").bundle.model
    model = model.with_sparsity(SparsityConfig(mode="unique", page_size=4, budget=16))
    rng = np.random.default_rng(0)
    audio = [[rng.standard_normal(n * 8000).astype(np.float32) * 0.1 for n in (3, 5, 4)],
             [rng.standard_normal(n * 8000).astype(np.float32) * 0.1 for n in (6, 2)]]
    decoder = RowDecoder(model, 2, None, MAX_NEW)

    def run():
        return [(e.tokens, round(e.sum_logprob, 4)) for e in decoder.run([_Windows(a) for a in audio])
                if isinstance(e, WindowResult)]

    first = run()
    assert run() == first
    torch.cuda.set_sync_debug_mode("error")
    try:
        second = run()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert second == first and len(first) == 5


def test_greedy_host_reads_a_steps_choices_after_queueing_the_next_step(folder, monkeypatch):
    """The greedy loop's order (what lets the host's half overlap the device on a GPU): the choices a step made
    are read only after the next step was queued; only the last step's, when no row is left to step, are read
    right away. Each window's result comes out with every token chosen for it."""
    model = unique_asr.load_model(folder, device="cpu").bundle.model
    rng = np.random.default_rng(1)
    audio = [[rng.standard_normal(n * 8000).astype(np.float32) * 0.1 for n in (3, 5, 4)],
             [rng.standard_normal(n * 8000).astype(np.float32) * 0.1 for n in (6, 2)]]
    steps, reads = [0], []
    step, choose, read = RowDecoder._step, RowDecoder._choose, RowDecoder._read

    def counted_step(self, *a):
        steps[0] += 1
        return step(self, *a)

    def tagged_choose(self, *a):
        choices = choose(self, *a)
        choices.made_after = steps[0]  # the number of steps queued when these choices were made
        return choices

    def logged_read(self, choices, rows):
        reads.append((choices.made_after, steps[0]))
        return read(self, choices, rows)

    monkeypatch.setattr(RowDecoder, "_step", counted_step)
    monkeypatch.setattr(RowDecoder, "_choose", tagged_choose)
    monkeypatch.setattr(RowDecoder, "_read", logged_read)
    results = [e for e in RowDecoder(model, 2, None, MAX_NEW).run([_Windows(a) for a in audio])
               if isinstance(e, WindowResult)]
    assert len(results) == 5 and all(0 < len(r.tokens) <= MAX_NEW for r in results)
    assert steps[0] > 5 and len(reads) >= steps[0]
    right_away = [(made, now) for made, now in reads if now == made]
    assert all(now >= made for made, now in reads)
    assert len(right_away) <= 1 and (not right_away or right_away[0] == reads[-1])
