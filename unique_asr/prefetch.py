"""Work produced ahead of its consumer in a background thread, through a bounded queue.

Reading and resampling audio, the VAD, and the decoder each wait on something else (libsndfile and soxr on
the CPU, the decoder on the GPU). `read_ahead` runs a producer in a daemon thread at most `depth` items ahead;
`PrefetchedWindows` does that for decode windows while keeping their coverage totals exact.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from .windows import Window

T = TypeVar("T")
_POLL_S = 0.1  # how often a blocked producer checks whether the consumer is gone


def read_ahead(items: Iterable[T], depth: int) -> Iterator[T]:
    """The items of `items`, produced in a daemon thread at most `depth` ahead of the consumer.

    An exception raised while producing (unreadable audio, a full disk) is raised here, after the items before
    it. Closing this iterator early (break, close, garbage collection) stops the thread, which then closes
    `items` itself: a generator's clean-up (open files, an ffmpeg process) runs in the thread that iterated it.
    """
    if depth < 1:
        raise ValueError(f"read-ahead depth must be >= 1, got {depth}")
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source = iter(items)
        try:
            for item in source:
                if not put((True, item)):
                    return
            put((False, None))
        except BaseException as exc:  # handed to the consumer, raised there
            put((False, exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    def consume() -> Iterator[T]:
        thread = threading.Thread(target=produce, name="unique-asr-read-ahead", daemon=True)
        thread.start()
        try:
            while True:
                more, item = slots.get()
                if more:
                    yield item
                elif item is None:
                    return
                else:
                    raise item
        finally:
            stop.set()

    return consume()


class WindowSource(Protocol):
    """Windows in order, with the running coverage totals `speech_s` and `duration_s` (seconds)."""

    speech_s: float
    duration_s: float

    def __iter__(self) -> Iterator[Window]: ...


class PrefetchedWindows:
    """The windows of `source`, cut in a background thread at most `depth` windows ahead (`read_ahead`).

    `speech_s` and `duration_s` are the source's totals as of the last window handed out (its final totals
    once exhausted or failed), so coverage reads exactly as without prefetching. Iterate once.
    """

    def __init__(self, source: WindowSource, depth: int):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self._source, self._depth = source, depth
        self.speech_s, self.duration_s = source.speech_s, source.duration_s

    def _with_totals(self) -> Iterator[tuple[Window, float, float]]:
        for window in self._source:
            yield window, self._source.speech_s, self._source.duration_s

    def __iter__(self) -> Iterator[Window]:
        try:
            for window, speech_s, duration_s in read_ahead(self._with_totals(), self._depth):
                self.speech_s, self.duration_s = speech_s, duration_s  # the totals as of this window
                yield window
        except Exception:
            self.speech_s, self.duration_s = self._source.speech_s, self._source.duration_s
            raise
        self.speech_s, self.duration_s = self._source.speech_s, self._source.duration_s
