"""Long-form orchestration on real tiny.en weights: sample-exact timestamps, batched vs sequential, silence,
and resume from a journal equal to an uninterrupted run."""

from __future__ import annotations

import json
import numpy as np
import pytest
import speech_data

from unique_asr.api import load_model
from unique_asr.config import DecodeOptions
from unique_asr.decoding import DecodeResult
from unique_asr.errors import UniqueASRError
from unique_asr.journal import Journal, JournalExists, WindowRecord
from unique_asr.transcribe import SAMPLES_PER_TOKEN, Piece, best_attempt, split_tokens
from unique_asr.types import Segment

RATE = 16000
# Three recorded utterances (tests/data/speech) placed at known offsets in 27 s of silence.
PLACED = (("austen_0870", 0.5), ("austen_0890", 9.0), ("austen_0930", 21.0))
OPTIONS = dict(max_window_s=10.0, batch_size=2)  # three utterances -> three VAD windows


@pytest.fixture(scope="module")
def clip():
    """27 s of audio with the utterances placed at known samples; returns (audio, [(start_s, end_s, text)]) where
    start/end are the first word's start and the last word's end from the clips' forced alignments."""
    audio = np.zeros(27 * RATE, np.float32)
    truth = []
    for name, offset in PLACED:
        speech = speech_data.clip(name)
        start = round(offset * RATE)
        audio[start : start + len(speech)] = speech
        words_ = speech_data.manifest()[name]["words"]
        truth.append((start / RATE + words_[0]["start"], start / RATE + words_[-1]["end"], speech_data.text(name)))
    return audio, truth


@pytest.fixture(scope="module")
def model():
    return load_model("tiny.en", device="cpu")


@pytest.fixture(scope="module")
def runs(model, clip):
    """Uninterrupted transcriptions of the clip per strategy (computed once, shared by the tests)."""
    cache = {}

    def run(strategy: str):
        if strategy not in cache:
            segments, info = model.transcribe(clip[0], strategy=strategy, **OPTIONS)
            cache[strategy] = (list(segments), info)
        return cache[strategy]

    return run


words = speech_data.normalised_words


def test_split_tokens_is_sample_exact_far_into_a_file():
    tb = 50363
    start = 10 * 3600 * RATE + 123  # ten hours in: float seconds would have drifted
    end = start + 30 * RATE
    step = SAMPLES_PER_TOKEN
    pieces, tail = split_tokens([tb, 11, 12, tb + 50, tb + 50, 13, tb + 75], tb, start, end)
    assert [(p.start_sample, p.end_sample) for p in pieces] == [
        (start, start + 50 * step),
        (start + 50 * step, start + 75 * step),
    ]
    assert pieces[0].tokens == (tb, 11, 12, tb + 50) and tail is None
    # text left open after a closed piece: the tail runs from its opening timestamp to the end (seek)
    pieces, tail = split_tokens([tb, 11, tb + 50, tb + 50, 13, 14], tb, start, end)
    assert len(pieces) == 1 and (tail.start_sample, tail.end_sample, tail.tokens) == (
        start + 50 * step,
        end,
        (tb + 50, 13, 14),
    )
    pieces, tail = split_tokens(
        [tb, 11, tb + 50, tb + 60], tb, start, end
    )  # stopped after an opening timestamp
    assert len(pieces) == 1 and tail.start_sample == start + 60 * step and tail.tokens == (tb + 60,)
    # a timestamp past the audio is clamped to its end
    pieces, _ = split_tokens([tb, 11, tb + 1500], tb, start, start + RATE)
    assert pieces[0].end_sample == start + RATE
    # no timestamps: one piece for the whole span; text never closed: from its opening timestamp to the end
    assert split_tokens([11, 12], tb, start, end) == ([Piece(start, end, (11, 12))], None)
    assert split_tokens([tb + 5, 11], tb, start, end) == ([Piece(start + 5 * step, end, (tb + 5, 11))], None)
    assert split_tokens([tb, tb + 5], tb, start, end) == ([], None)


def test_timestamps_follow_known_boundaries(runs, clip):
    segments, info = runs("batched")
    assert info.windows == 3 and len(segments) == 3
    for segment, (start, end, text) in zip(segments, clip[1]):
        assert words(segment.text) == words(text)
        assert abs(segment.start - start) < 0.4 and abs(segment.end - end) < 0.4, (segment, start, end)
    assert [s.id for s in segments] == [0, 1, 2]
    # decoded_s: the detected speech under segments (their ends trail the words a little), nothing uncovered
    assert 15.0 < info.speech_s < 19.0 and 0.9 * info.speech_s < info.decoded_s <= info.speech_s
    assert info.uncovered == [] and info.guard_stops == info.loops == 0
    assert info.duration_s == pytest.approx(27.0)


def test_batched_and_sequential_give_the_reference_words(runs, clip):
    reference = [w for _, _, text in clip[1] for w in words(text)]
    for strategy in ("batched", "sequential"):
        segments, info = runs(strategy)
        assert [w for s in segments for w in words(s.text)] == reference, strategy
        assert info.options["strategy"] == strategy


def test_fallback_keeps_the_best_attempt():
    options = DecodeOptions()  # compression ratio <= 2.4 and avg logprob >= -1 pass

    def attempt(temperature, logprob, ratio=1.0, looped=False):
        return DecodeResult((1,), "x", logprob, 0.0, ratio, temperature, "en", 1.0, looped)

    failing = [
        attempt(0.0, -1.5),
        attempt(0.2, -1.2),
        attempt(0.4, -0.5, ratio=3.0),
        attempt(0.6, -0.2, looped=True),
    ]
    assert best_attempt(failing, options).temperature == 0.2  # highest logprob among those not repeating
    assert best_attempt([attempt(0.0, -1.5), attempt(0.2, -0.3)], options).temperature == 0.2
    silent = DecodeResult((), "", -2.0, 0.9, 0.0, 0.0, "en", 1.0)
    assert silent.is_silence(options) and best_attempt([silent], options) is silent


def test_every_temperature_failing_still_gives_the_words(model, clip):
    """An unreachable logprob threshold makes every attempt fail: the window is still transcribed."""
    audio = clip[0][: 8 * RATE]  # the first utterance only (it ends at 7.6 s)
    segments, _ = model.transcribe(audio, temperatures=(0.0, 0.5), best_of=2, log_prob_threshold=0.0)
    [segment] = list(segments)
    assert words(segment.text) == words(clip[1][0][2]) and segment.temperature in (0.0, 0.5)


def test_silence_gives_no_segments(model):
    segments, info = model.transcribe(np.zeros(20 * RATE, np.float32))
    assert list(segments) == [] and info.windows == 0 and info.speech_s == 0.0


def test_no_speech_is_an_explicit_decision(model, tmp_path):
    noise = np.random.default_rng(0).normal(0, 0.01, 20 * RATE).astype(np.float32)
    journal = Journal(tmp_path / "j.jsonl", resume=False)
    segments, info = model.transcribe(noise, vad=False, journal=journal)
    assert list(segments) == [] and info.windows == 1
    [record] = Journal(tmp_path / "j.jsonl").records
    assert (
        record.no_speech
        and record.segments == ()
        and (record.start_sample, record.end_sample) == (0, 20 * RATE)
    )


@pytest.mark.parametrize("strategy", ["sequential", "batched"])
def test_resume_equals_an_uninterrupted_run(model, clip, runs, tmp_path, strategy):
    full, full_info = runs(strategy)
    path = tmp_path / "run.jsonl"
    segments, _ = model.transcribe(clip[0], strategy=strategy, journal=Journal(path, resume=False), **OPTIONS)
    assert next(segments) == full[0]
    segments.close()  # interrupted after the first window's segment
    journal = Journal(path, resume=True)
    assert len(journal.records) == 1
    resumed, info = model.transcribe(clip[0], strategy=strategy, journal=journal, **OPTIONS)
    resumed = list(resumed)
    if strategy == "sequential":  # one window at a time: the same computation, bit for bit
        assert resumed == full
    else:  # other batch companions than before: scores may differ in the last float bits, nothing else
        assert [(s.id, s.start, s.end, s.text, s.tokens) for s in resumed] == [
            (s.id, s.start, s.end, s.text, s.tokens) for s in full
        ]
        assert [s.avg_logprob for s in resumed] == pytest.approx([s.avg_logprob for s in full], abs=1e-4)
    assert info.windows == full_info.windows and info.decoded_s == pytest.approx(full_info.decoded_s)
    assert info.speech_s == pytest.approx(full_info.speech_s, abs=0.05)
    records = Journal(path).records
    assert [r.index for r in records] == [0, 1, 2]
    assert all(a.end_sample <= b.start_sample for a, b in zip(records, records[1:]))


def test_journal_survives_a_torn_line_and_refuses_other_runs(tmp_path):
    path = tmp_path / "j.jsonl"
    options = {"strategy": "batched", "batch_size": 4}
    journal = Journal(path, resume=False)
    journal.start("tiny.en", options, 12.5, "en", 1.0)
    journal.append(WindowRecord(0, 0, RATE, 0.9, (Segment(0, 0.0, 1.0, " hi", (1, 2)),), (1, 2)))
    with open(path, "a") as f:
        f.write('{"index": 1, "start_sam')  # killed mid-write
    reopened = Journal(path, resume=True)
    assert [r.index for r in reopened.records] == [0] and reopened.records[0].segments[0].tokens == (1, 2)
    assert path.read_text().endswith("\n") and len(path.read_text().splitlines()) == 2
    reopened.start("tiny.en", {**options, "batch_size": 8}, 12.5, "en", 1.0)  # speed-only option: fine
    for other in [
        ("base", options, 12.5),
        ("tiny.en", {**options, "strategy": "sequential"}, 12.5),
        ("tiny.en", options, 99.0),
    ]:
        with pytest.raises(UniqueASRError):
            Journal(path).start(*other, "en", 1.0)
    assert json.loads(path.read_text().splitlines()[0])["header"]["model"] == "tiny.en"
    with pytest.raises(JournalExists):  # a fresh start keeps finished windows unless told to drop them
        Journal(path, resume=False)
    assert Journal(path, resume=False, overwrite=True).records == [] and not path.exists()
    Journal(path).finish()
    assert not path.exists()
