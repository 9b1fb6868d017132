"""Speech coverage: how much VAD-detected speech the emitted segments overlap, and what they left out, and why.

Intervals are [start, end) in 16 kHz samples. A window's speech is its VAD spans; its coverage is the part
of those spans inside some emitted segment (a segment that has text). Each decode pass that leaves part of
its audio without text says why (`Hole`): the no-speech rule judged it silent, the repetition guard stopped
the text, the decode came back empty, or the pass limit was reached; speech the timestamps passed over inside
decoded text is "skipped". Uncovered speech stretches longer than a threshold are reported with that reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Interval = tuple[int, int]

NO_SPEECH = "no-speech"  # the no-speech rule judged the audio silent
GUARD_STOP = "guard-stop"  # the repetition guard (or the compression-ratio test) stopped the text
EMPTY_TEXT = "empty-text"  # the decode produced no text
PASS_LIMIT = "pass-limit"  # the window's remainder was decoded again as often as allowed
SKIPPED = "skipped"  # the model's timestamps passed over this speech (or stopped short of it)


@dataclass(frozen=True)
class Hole:
    """A stretch of a window's audio that a decode pass left without text, and why."""

    start_sample: int
    end_sample: int
    why: str


@dataclass(frozen=True)
class Uncovered:
    """Detected speech without any emitted segment over it: seconds from the start of the file, and why."""

    start: float
    end: float
    why: str

    @property
    def duration(self) -> float:
        return self.end - self.start


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, non-overlapping union of intervals (empty ones dropped)."""
    out: list[list[int]] = []
    for a, b in sorted(i for i in intervals if i[1] > i[0]):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def intersect(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    """Intersection of two merged interval lists."""
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo < hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def subtract(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    """a minus b, both merged interval lists."""
    out = []
    for lo, hi in a:
        at = lo
        for c, d in b:
            if d <= at or c >= hi:
                continue
            if c > at:
                out.append((at, c))
            at = max(at, d)
        if at < hi:
            out.append((at, hi))
    return out


def length(intervals: Iterable[Interval]) -> int:
    return sum(b - a for a, b in intervals)


def speech_after(spans: Sequence[Interval], at: int) -> tuple[int, int]:
    """(samples of speech in `spans` after sample `at`, first speech sample at or after `at`; -1 if none)."""
    rest = [(max(a, at), b) for a, b in spans if b > at]
    return length(rest), (rest[0][0] if rest else -1)


def window_coverage(
    spans: Sequence[Interval],
    segments: Iterable[Interval],
    holes: Sequence[Hole],
    min_samples: int,
    sample_rate: int,
) -> tuple[int, list[Uncovered]]:
    """(speech samples covered by segments, uncovered stretches holding at least min_samples of speech, with
    their reason). A stretch runs across pauses until covered speech interrupts it.

    spans: the window's VAD speech; segments: emitted segments' [start, end); holes: why passes left audio
    without text (the hole overlapping a stretch most names its reason; none: SKIPPED)."""
    speech = merge(spans)
    covered = intersect(speech, merge(segments))
    gaps = []
    for pieces in _join(subtract(speech, covered), speech):
        if length(pieces) < min_samples:
            continue
        a, b = pieces[0][0], pieces[-1][1]
        best, why = 0, SKIPPED
        for hole in holes:
            overlap = min(b, hole.end_sample) - max(a, hole.start_sample)
            if overlap > best:
                best, why = overlap, hole.why
        gaps.append(Uncovered(a / sample_rate, b / sample_rate, why))
    return length(covered), gaps


def _join(uncovered: list[Interval], speech: list[Interval]) -> list[list[Interval]]:
    """Uncovered pieces grouped across the pauses between speech spans (no covered speech in between)."""
    out: list[list[Interval]] = []
    for a, b in uncovered:
        if out and not intersect([(out[-1][-1][1], a)], speech):
            out[-1].append((a, b))
        else:
            out.append([(a, b)])
    return out
