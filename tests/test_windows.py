"""Decode windows: <= max_window_s, cut at silences, nothing dropped, sample-exact offsets, resume, memory."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from unique_asr.audio import SAMPLE_RATE, load
from unique_asr.config import TranscribeOptions
from unique_asr.vad import FRAME, VadModel, iter_speech_spans
from unique_asr.windows import SEARCH_S, iter_windows

SAMPLES = pathlib.Path(__file__).resolve().parents[1] / "samples"
SLACK = 200 * SAMPLE_RATE // 1000 + 3 * FRAME  # speech padding plus VAD frame latency


@pytest.fixture(scope="module")
def vad() -> VadModel:
    return VadModel()


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return load(SAMPLES / "hello.flac")


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SAMPLE_RATE), np.float32)


def check_windows(windows, x: np.ndarray, max_s: float, start: int = 0) -> None:
    """Ordered, disjoint, <= max_s, and each window's audio is exactly its slice of x."""
    assert windows, "no windows"
    assert [w.index for w in windows] == list(range(len(windows)))
    assert windows[0].start_sample >= start
    for w in windows:
        assert 0 < w.end_sample - w.start_sample <= round(max_s * SAMPLE_RATE)
        assert w.audio.dtype == np.float32 and np.array_equal(w.audio, x[w.start_sample : w.end_sample])
        assert 0 < w.speech_s <= (w.end_sample - w.start_sample) / SAMPLE_RATE
    assert all(a.end_sample <= b.start_sample for a, b in zip(windows, windows[1:]))


def covered(windows, a: int, b: int) -> bool:
    """Whether every sample of [a, b) lies in some window."""
    mask = np.zeros(b - a, bool)
    for w in windows:
        mask[max(w.start_sample - a, 0) : max(w.end_sample - a, 0)] = True
    return bool(mask.all())


def layout(clip: np.ndarray, gaps: list[float]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """silence(gaps[0]) clip silence(gaps[1]) clip ... silence(gaps[-1]), and where each clip's speech
    truly begins and ends (its first and one-past-last non-silent sample)."""
    loud = np.flatnonzero(np.abs(clip) > 1e-3)
    parts, truth, pos = [], [], 0
    for gap in gaps[:-1]:
        parts += [silence(gap), clip]
        pos += len(silence(gap))
        truth.append((pos + int(loud[0]), pos + int(loud[-1]) + 1))
        pos += len(clip)
    return np.concatenate(parts + [silence(gaps[-1])]), truth


def test_windows_cut_at_known_silences(vad, clip):
    x, truth = layout(clip, [2.0, 1.5, 2.5, 3.0])
    max_s = len(clip) / SAMPLE_RATE + 0.5  # one clip's speech fits a window, two clips do not
    options = TranscribeOptions(max_window_s=max_s)
    it = iter_windows(x, options, vad, block_s=1.0)
    windows = list(it)
    check_windows(windows, x, max_s)
    assert len(windows) == 3
    for w, (a, b) in zip(windows, truth):
        assert abs(w.start_sample - a) <= SLACK and b - SLACK <= w.end_sample <= b + SLACK
    spans = list(iter_speech_spans(x, options, vad))
    assert all(covered(windows, s.start_sample, s.end_sample) for s in spans)
    assert it.speech_s == pytest.approx(sum(s.samples for s in spans) / SAMPLE_RATE)
    assert it.speech_s == pytest.approx(sum(w.speech_s for w in windows))
    assert it.duration_s == len(x) / SAMPLE_RATE
    merged = list(iter_windows(x, TranscribeOptions(), vad))  # 30 s fits all three clips: one window
    assert len(merged) == 1 and merged[0].start_sample == windows[0].start_sample
    assert merged[0].end_sample == windows[-1].end_sample


def test_long_speech_is_split_near_the_limit_not_dropped(vad, clip):
    loud = np.flatnonzero(np.abs(clip) > 1e-3)
    reps = int(40 * SAMPLE_RATE // (loud[-1] - loud[0])) + 1  # clips back to back: > 40 s of speech
    x = np.concatenate([silence(1.0)] + [clip[loud[0] : loud[-1] + 1]] * reps + [silence(1.0)])
    options = TranscribeOptions(min_silence_ms=2000)  # no pause ends a span: one ~35 s span
    windows = list(iter_windows(x, options, vad, block_s=2.0))
    check_windows(windows, x, 30.0)
    assert len(windows) == 2 and windows[0].end_sample == windows[1].start_sample
    first = windows[0]
    cut_s = (first.end_sample - first.start_sample) / SAMPLE_RATE
    assert 30.0 - SEARCH_S <= cut_s <= 30.0
    speech_start, speech_end = SAMPLE_RATE, len(x) - SAMPLE_RATE
    assert covered(windows, speech_start, speech_end)


def test_fixed_windows_without_vad(clip):
    x = np.concatenate([clip] * 12)  # 78 s
    it = iter_windows(x, TranscribeOptions(vad=False), None)
    windows = list(it)
    full, rest = divmod(len(x), 480000)
    assert [w.end_sample - w.start_sample for w in windows] == [480000] * full + [rest] * (rest > 0)
    assert len(windows) >= 3
    assert windows[0].start_sample == 0
    assert all(a.end_sample == b.start_sample for a, b in zip(windows, windows[1:]))
    assert all(np.array_equal(w.audio, x[w.start_sample : w.end_sample]) for w in windows)
    assert it.speech_s == it.duration_s == len(x) / SAMPLE_RATE
    resumed = list(iter_windows(x, TranscribeOptions(vad=False), None, start_sample=windows[1].end_sample))
    assert [w.start_sample for w in resumed] == [w.start_sample for w in windows[2:]]
    assert all(np.array_equal(a.audio, b.audio) for a, b in zip(resumed, windows[2:]))


def test_resume_from_a_finished_window(vad, clip, tmp_path):
    import soundfile as sf

    x, truth = layout(clip, [1.0, 1.0, 1.2, 1.0])
    path = tmp_path / "three.wav"
    sf.write(path, x, SAMPLE_RATE, subtype="FLOAT")
    max_s = len(clip) / SAMPLE_RATE + 0.5
    options = TranscribeOptions(max_window_s=max_s)
    full = list(iter_windows(path, options, vad))
    resume_at = full[0].end_sample
    rest = list(iter_windows(path, options, vad, start_sample=resume_at))
    check_windows(rest, x, max_s, start=resume_at)
    # every loud sample after the resume point is in a resumed window (the VAD frame grid restarts at
    # resume_at, so padded edges may move by up to a frame; speech itself is never lost)
    assert all(covered(rest, max(a, resume_at), b) for a, b in truth if b > resume_at)
    assert abs(rest[0].start_sample - full[1].start_sample) <= FRAME
    assert abs(rest[-1].end_sample - full[-1].end_sample) <= FRAME


def test_silence_only_gives_no_windows(vad):
    it = iter_windows(silence(5.0), TranscribeOptions(), vad)
    assert list(it) == [] and it.speech_s == 0.0 and it.duration_s == 5.0


def test_window_buffer_stays_bounded(vad, clip):
    x = np.concatenate([np.concatenate([clip, silence(0.7)])] * 12)  # ~86 s of talk with pauses
    block_s = 2.0
    it = iter_windows(x, TranscribeOptions(), vad, block_s=block_s)
    windows = list(it)
    check_windows(windows, x, 30.0)
    assert covered(windows, windows[0].start_sample, windows[-1].end_sample) is False  # silences are skipped
    # the open window plus up to two partly used blocks (blocks are dropped whole), plus padding
    assert it.peak_buffer_s <= 30.0 + 2 * block_s + 0.5, it.peak_buffer_s
    assert it.duration_s == len(x) / SAMPLE_RATE


def test_vad_on_needs_a_model():
    with pytest.raises(ValueError, match="VadModel"):
        iter_windows(silence(1.0), TranscribeOptions(), None)
