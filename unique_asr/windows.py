"""Decode windows of <= max_window_s cut at VAD silences, streamed with bounded memory.

Adjacent speech spans are merged into one window while the window still fits; a window closes as soon as
no future span could fit into it. A single stretch of speech longer than the limit is cut at the quietest
VAD frame in the last few seconds before the limit. Windows are disjoint and every span sample lies in
exactly one of them; the audio between windows is silence by the VAD's verdict and is not decoded.
Only the audio not yet windowed (at most one window plus two stream blocks) is held in memory, plus
READ_AHEAD_BLOCKS blocks that a background thread has read and resampled ahead of the VAD.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .audio import SAMPLE_RATE, Source, stream
from .config import TranscribeOptions
from .prefetch import read_ahead
from .vad import FRAME, SpanTracker, SpeechSpan, VadModel, vad_frames

SEARCH_S = 5.0  # an over-long span is cut at the quietest frame within this many seconds before the limit
READ_AHEAD_BLOCKS = 2  # audio blocks decoded ahead of the VAD, in a background thread


@dataclass(frozen=True)
class Window:
    """One decode window: audio float32 [end_sample - start_sample] at 16 kHz, sample-exact offsets.

    spans: the VAD speech in it, ((start_sample, end_sample), ...) absolute (empty: all of it is speech)."""

    index: int
    start_sample: int
    end_sample: int
    audio: np.ndarray = field(repr=False)
    speech_s: float
    spans: tuple[tuple[int, int], ...] = ()

    @property
    def speech(self) -> tuple[tuple[int, int], ...]:
        """The window's speech intervals (the whole window when no spans were recorded)."""
        return self.spans or ((self.start_sample, self.end_sample),)

    @property
    def start_s(self) -> float:
        return self.start_sample / SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return self.end_sample / SAMPLE_RATE


class _AudioBuffer:
    """The not-yet-windowed audio: blocks with their absolute start sample; slices and drops by sample."""

    def __init__(self, start: int):
        self.blocks: list[tuple[int, np.ndarray]] = []
        self.end = start

    def append(self, block: np.ndarray) -> None:
        if len(block):
            self.blocks.append((self.end, block))
            self.end += len(block)

    def take(self, a: int, b: int) -> np.ndarray:
        parts = [blk[max(a - s, 0) : b - s] for s, blk in self.blocks if s < b and s + len(blk) > a]
        out = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        assert len(out) == b - a, f"window [{a}, {b}) is not buffered"
        return out

    def drop_before(self, x: int) -> None:
        self.blocks = [(s, blk) for s, blk in self.blocks if s + len(blk) > x]

    @property
    def samples(self) -> int:
        return sum(len(blk) for _, blk in self.blocks)


class WindowIterator:
    """Iterator of `Window`s; `speech_s` and `duration_s` (totals so far) grow as it runs.

    After exhaustion, `speech_s` is the detected speech of the whole (resumed) stream and `duration_s`
    the audio read, so `speech_s` vs the decoded windows gives the coverage line. `peak_buffer_s` is the
    most audio the window buffer held at once (the memory bound, for tests and benchmarks).
    """

    def __init__(self, source: Source, options: TranscribeOptions, vad_model: VadModel | None,
                 start_sample: int = 0, block_s: float = 10.0):
        self.speech_s = 0.0
        self.duration_s = 0.0
        self.peak_buffer_s = 0.0
        self._max = round(options.max_window_s * SAMPLE_RATE)
        self._start = start_sample
        if options.vad:
            if vad_model is None:
                raise ValueError("options.vad is on: pass a VadModel (load it once, reuse it for every file)")
            self._it = self._vad_windows(source, options, vad_model, block_s)
        else:
            self._it = self._fixed_windows(source)

    def __iter__(self) -> WindowIterator:
        return self

    def __next__(self) -> Window:
        return next(self._it)

    def _fixed_windows(self, source: Source) -> Iterator[Window]:
        start = self._start
        for i, audio in enumerate(stream(source, block_s=self._max / SAMPLE_RATE, start_sample=self._start)):
            self.duration_s += len(audio) / SAMPLE_RATE
            self.speech_s += len(audio) / SAMPLE_RATE
            yield Window(i, start, start + len(audio), audio, len(audio) / SAMPLE_RATE)
            start += len(audio)

    def _vad_windows(self, source: Source, options: TranscribeOptions, vad_model: VadModel,
                     block_s: float) -> Iterator[Window]:
        """Merge spans into windows as they close; offsets in spans are relative to start_sample."""
        tracker = SpanTracker(options, history_frames=self._max // FRAME + 2)
        state, buf = vad_model.new_state(), _AudioBuffer(0)
        search = min(round(SEARCH_S * SAMPLE_RATE), self._max // 2)
        spans: list[SpeechSpan] = []  # spans of the window being built
        count = 0
        # the audio is read and resampled in its own thread, overlapping the VAD (1.2 -> 0.7-0.8 s for
        # 21.5 min of 22.05 kHz FLAC on a 2-core machine); READ_AHEAD_BLOCKS more blocks are held meanwhile
        blocks = read_ahead(stream(source, block_s=block_s, start_sample=self._start), READ_AHEAD_BLOCKS)
        for block, frames in vad_frames(blocks):
            buf.append(block)
            self.duration_s = buf.end / SAMPLE_RATE
            self.peak_buffer_s = max(self.peak_buffer_s, buf.samples / SAMPLE_RATE)
            for p in vad_model.probs(frames, state):
                spans += tracker.push(float(p))
                while True:
                    if spans and tracker.end_bound - spans[0].start_sample > self._max:
                        spans, closed = self._settle(spans)
                        yield self._window(count, closed, buf)
                        count += 1
                    elif tracker.open_start is not None and not tracker.pending and not spans and \
                            tracker.end_bound - tracker.horizon > self._max:
                        limit = tracker.horizon + self._max
                        cut = tracker.quietest_cut(limit - search, min(limit, tracker.now))
                        spans.append(tracker.split(cut))
                    else:
                        break
            keep = min([tracker.horizon] + [s.start_sample for s in spans[:1]])
            buf.drop_before(keep)
        spans += tracker.finish(buf.end)
        while spans:
            spans, closed = self._settle(spans)
            yield self._window(count, closed, buf)
            count += 1

    def _settle(self, spans: list[SpeechSpan]) -> tuple[list[SpeechSpan], list[SpeechSpan]]:
        """Split off the leading spans that fit one window: (remaining, window's spans)."""
        n = 1
        while n < len(spans) and spans[n].end_sample - spans[0].start_sample <= self._max:
            n += 1
        return spans[n:], spans[:n]

    def _window(self, index: int, spans: list[SpeechSpan], buf: _AudioBuffer) -> Window:
        a, b = spans[0].start_sample, spans[-1].end_sample
        speech = sum(s.samples for s in spans) / SAMPLE_RATE
        self.speech_s += speech
        at = tuple((s.start_sample + self._start, s.end_sample + self._start) for s in spans)
        return Window(index, a + self._start, b + self._start, buf.take(a, b), speech, at)


def iter_windows(source: Source, options: TranscribeOptions, vad_model: VadModel | None,
                 start_sample: int = 0, block_s: float = 10.0) -> WindowIterator:
    """Decode windows of `source` in order (see module doc); VAD off gives back-to-back max_window_s windows.

    start_sample: resume point in 16 kHz samples (e.g. the end of the last finished window); audio before
        it is skipped without VAD or decoding, and windows keep absolute sample offsets. Window indices
        count from 0 within this call.
    """
    return WindowIterator(source, options, vad_model, start_sample, block_s)
