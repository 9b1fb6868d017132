"""Decode windows produced ahead of the decoder in a background thread.

Reading the audio, resampling it and running the VAD are CPU work; the decoder waits on the GPU. Handing the
windows over through a bounded queue lets the two overlap, with at most `depth` windows held in between.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator, Protocol

from .windows import Window


class WindowSource(Protocol):
    """Windows in order, with the running coverage totals `speech_s` and `duration_s` (seconds)."""

    speech_s: float
    duration_s: float

    def __iter__(self) -> Iterator[Window]: ...


class PrefetchedWindows:
    """Iterates `source` in a daemon thread, at most `depth` windows ahead of the consumer.

    `speech_s` and `duration_s` are the source's totals as of the last window handed out (its final totals
    once exhausted), so coverage reads exactly as without prefetching. An exception raised by the source
    (unreadable audio, a full disk) is raised in the consumer where the window it stopped at would have
    come. Iterate once; stopping early (break, close, garbage collection) stops the thread.
    """

    _POLL_S = 0.1  # how often a blocked producer checks whether the consumer is gone

    def __init__(self, source: WindowSource, depth: int):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self._source, self._queue = source, queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.speech_s, self.duration_s = source.speech_s, source.duration_s

    def _put(self, item: tuple) -> bool:
        """Queue item unless the consumer has stopped; False when it has."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=self._POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for window in self._source:
                if not self._put((window, None, self._source.speech_s, self._source.duration_s)):
                    return
            end = (None, None, self._source.speech_s, self._source.duration_s)
        except BaseException as exc:  # handed to the consumer, raised there
            end = (None, exc, self._source.speech_s, self._source.duration_s)
        self._put(end)

    def __iter__(self) -> Iterator[Window]:
        thread = threading.Thread(target=self._produce, name="unique-asr-windows", daemon=True)
        thread.start()
        try:
            while True:
                window, error, self.speech_s, self.duration_s = self._queue.get()
                if error is not None:
                    raise error
                if window is None:
                    return
                yield window
        finally:
            self._stop.set()
