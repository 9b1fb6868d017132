"""Windows cut ahead in a background thread: same windows, same coverage totals, errors and early stops."""

from __future__ import annotations

import pathlib
import threading
import time

import numpy as np
import pytest

from unique_asr.audio import SAMPLE_RATE, load
from unique_asr.config import TranscribeOptions
from unique_asr.errors import AudioError
from unique_asr.prefetch import PrefetchedWindows
from unique_asr.vad import VadModel
from unique_asr.windows import iter_windows

SAMPLES = pathlib.Path(__file__).resolve().parents[1] / "samples"


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """Speech, pauses and silence: several windows of at most 4 s."""
    clip = load(SAMPLES / "hello.flac")
    gap = np.zeros(SAMPLE_RATE, np.float32)
    return np.concatenate([gap, clip, gap, clip, gap, gap, clip, gap])


OPTIONS = TranscribeOptions(max_window_s=4.0)


def test_same_windows_and_totals_as_the_plain_iterator(speech):
    vad = VadModel()
    plain = iter_windows(speech, OPTIONS, vad)
    want = [(w.index, w.start_sample, w.end_sample, w.audio.tobytes(), plain.speech_s) for w in plain]
    source = iter_windows(speech, OPTIONS, vad)
    ahead = PrefetchedWindows(source, depth=1)
    got = [(w.index, w.start_sample, w.end_sample, w.audio.tobytes(), ahead.speech_s) for w in ahead]
    assert len(want) >= 3 and got == want  # totals as of each window handed out, not of the producer
    assert (ahead.speech_s, ahead.duration_s) == (plain.speech_s, plain.duration_s)


class _Source:
    """A window source that yields `n` items, then raises `error` (if any); records how far it got."""

    def __init__(self, n: int, error: Exception | None = None):
        self.n, self.error, self.made, self.speech_s, self.duration_s = n, error, 0, 0.0, 0.0

    def __iter__(self):
        for i in range(self.n):
            self.made, self.speech_s, self.duration_s = i + 1, float(i + 1), float(i + 1)
            yield i
        if self.error is not None:
            raise self.error


def test_error_reaches_the_consumer_after_the_windows_before_it():
    ahead = PrefetchedWindows(_Source(3, AudioError("corrupt block at 12.0 s")), depth=2)
    got = []
    with pytest.raises(AudioError, match="corrupt block"):
        for item in ahead:
            got.append(item)
    assert got == [0, 1, 2] and ahead.speech_s == 3.0


def test_stays_at_most_depth_ahead_and_stops_when_the_consumer_does():
    source = _Source(1000)
    ahead = PrefetchedWindows(source, depth=2)
    it = iter(ahead)
    assert next(it) == 0
    time.sleep(0.3)
    assert source.made <= 1 + 2 + 1  # handed out, queued, and one waiting to be queued
    it.close()  # the consumer stops early
    deadline = time.monotonic() + 5
    while any(t.name == "unique-asr-read-ahead" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "unique-asr-read-ahead" for t in threading.enumerate())
    assert source.made < 10


def test_depth_is_checked():
    with pytest.raises(ValueError, match="depth"):
        PrefetchedWindows(_Source(1), depth=0)


def test_read_ahead_closes_its_source_in_the_producing_thread():
    """A generator's clean-up (an open file, an ffmpeg process) must run when the consumer stops early."""
    from unique_asr.prefetch import read_ahead

    closed = threading.Event()

    def blocks():
        try:
            for i in range(1000):
                yield i
        finally:
            closed.set()

    it = read_ahead(blocks(), depth=2)
    assert [next(it), next(it)] == [0, 1]
    it.close()
    assert closed.wait(timeout=5)
    assert list(read_ahead(iter([]), depth=1)) == []
