"""Batched mode conditioned on the previous text: stripes of consecutive windows decode in lockstep, each row
prompted with its own stripe's text (unique_asr.stripes). The plan, and on real tiny.en weights: batch size 1 is
sequential mode, each stripe carries only its own text, no conditioning is the independent-window decode, and a
resumed run equals an uninterrupted one."""

from __future__ import annotations

import numpy as np
import pytest
from speech_data import joined

from unique_asr.api import load_model
from unique_asr.journal import Journal
from unique_asr.stripes import blocks, split, stripes
from unique_asr.windows import Window

# Four utterances, 1 s apart; with 8 s windows each is its own VAD window. At batch size 2: stripes [0, 1], [2, 3].
NAMES = ["austen_0870", "austen_0880", "austen_0890", "goforward"]
OPTIONS = {"max_window_s": 8.0}
STRIPES = {"strategy": "batched", "stripe_windows": 1}


def _windows(indices) -> list[Window]:
    return [Window(i, i * 100, i * 100 + 50, np.zeros(50, np.float32), 1.0) for i in indices]


def test_split_is_contiguous_and_even():
    assert split(10, 4) == [range(3), range(3, 6), range(6, 8), range(8, 10)]
    assert split(3, 16) == [range(1), range(1, 2), range(2, 3)]
    assert split(5, 1) == [range(5)]
    assert split(15, 16, least=4) == [range(5), range(5, 10), range(10, 15)]  # stripe_windows 4
    assert split(3, 16, least=4) == [range(3)]


def test_a_resumed_block_cuts_the_same_stripes():
    full = stripes(_windows(range(16, 26)), block_size=16, width=3)  # block 1 holds windows 16..25
    assert [(s.first, [w.index for w in s.windows], s.continues) for s in full] == [
        (16, [16, 17, 18, 19], True), (20, [20, 21, 22], False), (23, [23, 24, 25], False)]
    # resumed after window 20 (the journal holds 0..20): the same stripes; the one cut mid-way continues
    resumed = stripes(_windows(range(21, 26)), block_size=16, width=3)
    assert [(s.first, [w.index for w in s.windows], s.continues) for s in resumed] == [
        (20, [21, 22], True), (23, [23, 24, 25], False)]
    assert [[w.index for w in b] for b in blocks(_windows(range(5, 12)), 4)] == [[5, 6, 7], [8, 9, 10, 11]]


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny.en", device="cpu")


@pytest.fixture(scope="module")
def audio():
    return joined(NAMES, gap_s=1.0)[0]


@pytest.fixture(scope="module")
def runs(tiny, audio, tmp_path_factory):
    """Uninterrupted runs by name, with their journals' records (kept: journals are not finished here)."""
    cache = {}

    def run(name: str, **options):
        if name not in cache:
            path = tmp_path_factory.mktemp(name) / "j.jsonl"
            segments, info = tiny.transcribe(audio, journal=Journal(path, resume=False), **OPTIONS, **options)
            cache[name] = (list(segments), info, Journal(path).records)
        return cache[name]

    return run


def _texts(segments):
    return [(s.id, s.start, s.end, s.text, s.tokens) for s in segments]


def test_batch_size_one_is_sequential_mode(runs):
    sequential, info, records = runs("sequential", strategy="sequential")
    batched, _, batched_records = runs("batched1", **STRIPES, batch_size=1)
    assert info.windows == 4
    assert batched == sequential  # every field, scores included: the same computation
    assert batched_records == records


def test_each_stripe_is_conditioned_on_its_own_text_only(runs):
    segments, info, records = runs("batched2", **STRIPES, batch_size=2)
    assert [r.index for r in records] == [0, 1, 2, 3] and info.windows == 4

    def tokens(record):
        return tuple(t for s in record.segments for t in s.tokens)

    # a window's journaled prompt is its stripe's text up to and including it: stripe 2 starts afresh
    assert records[0].prompt == tokens(records[0])
    assert records[1].prompt == tokens(records[0]) + tokens(records[1])
    assert records[2].prompt == tokens(records[2])
    assert records[3].prompt == tokens(records[2]) + tokens(records[3])
    assert all(s.temperature == 0.0 for s in segments)  # no reset of the prompt on the way
    sequential = runs("sequential", strategy="sequential")[0]
    # the first stripe is decoded exactly as sequential mode decodes those windows
    assert _texts(s for s in segments if s.end <= records[1].end_sample / 16000) == _texts(
        s for s in sequential if s.end <= records[1].end_sample / 16000)


def test_without_previous_text_windows_decode_independently(runs):
    batched, _, records = runs("independent", **STRIPES, batch_size=2, condition_on_previous_text=False)
    default, _, default_records = runs("default", strategy="batched", batch_size=2)  # stripe_windows 0
    sequential, _, _ = runs("independent1", strategy="sequential", condition_on_previous_text=False)
    assert batched == default and records == default_records  # one path: windows decoded independently
    assert _texts(batched) == _texts(sequential)  # the windows' own decodes, whatever their batch companions
    assert all(r.prompt == () for r in records)


@pytest.mark.parametrize("finished", [1, 2])
def test_resume_equals_an_uninterrupted_run(tiny, audio, runs, tmp_path, finished):
    full, full_info, full_records = runs("batched2", **STRIPES, batch_size=2)
    path = tmp_path / "run.jsonl"
    options = dict(OPTIONS, **STRIPES, batch_size=2)
    segments = tiny.transcribe(audio, journal=Journal(path, resume=False), **options)[0]
    assert [next(segments) for _ in range(finished)] == full[:finished]
    segments.close()  # interrupted: windows of the second stripe may be decoded but not yet journaled
    journal = Journal(path, resume=True)
    assert [r.index for r in journal.records] == list(range(finished))
    resumed, info = tiny.transcribe(audio, journal=journal, **options)
    resumed = list(resumed)
    assert _texts(resumed) == _texts(full)
    assert [s.avg_logprob for s in resumed] == pytest.approx([s.avg_logprob for s in full], abs=1e-4)
    assert [r.prompt for r in Journal(path).records] == [r.prompt for r in full_records]
    assert info.windows == full_info.windows and info.decoded_s == pytest.approx(full_info.decoded_s)
    with pytest.raises(Exception, match="other options"):  # the batch size sets the stripes: a resume keeps it
        list(tiny.transcribe(audio, journal=Journal(path, resume=True), **dict(options, batch_size=4))[0])
