"""Hallucination telemetry (repetition loops, runaway length) and interval arithmetic for time coverage.

Repetition is judged against the reference: an n-gram the speaker really repeats ("thank you very
much") is not a loop; a hypothesis n-gram that occurs K or more times *beyond* its count in the
reference is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

LOOP_NGRAM = 5
LOOP_MIN_REPEATS = 4
LOOP_LENGTH_RATIO = 1.5


def ngram_counts(words: Sequence[str], n: int) -> Counter:
    """Counts of the n-grams (tuples) of `words`."""
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def repeated_ngrams(counts: Counter) -> int:
    """Occurrences of n-grams beyond their first (0 for a text without repeats)."""
    return sum(c - 1 for c in counts.values() if c > 1)


@dataclass(frozen=True)
class Telemetry:
    """Per-file hallucination signals.

    repeated_ngrams / ref_repeated_ngrams: repeated n-gram occurrences in hypothesis / reference.
    max_ngram_excess: max over n-grams of (hypothesis count - reference count).
    length_ratio: hypothesis words / reference words (inf for an empty reference with output).
    loop: max_ngram_excess >= min_repeats, or length_ratio > max_length_ratio.
    """

    repeated_ngrams: int
    ref_repeated_ngrams: int
    max_ngram_excess: int
    length_ratio: float
    loop: bool


def telemetry(
    ref_words: Sequence[str],
    hyp_words: Sequence[str],
    n: int = LOOP_NGRAM,
    min_repeats: int = LOOP_MIN_REPEATS,
    max_length_ratio: float = LOOP_LENGTH_RATIO,
) -> Telemetry:
    """Repetition and length signals of one hypothesis against its reference (normalised words)."""
    hyp_counts, ref_counts = ngram_counts(hyp_words, n), ngram_counts(ref_words, n)
    excess = max((c - ref_counts.get(g, 0) for g, c in hyp_counts.items()), default=0)
    if ref_words:
        ratio = len(hyp_words) / len(ref_words)
    else:
        ratio = float("inf") if hyp_words else 1.0
    return Telemetry(
        repeated_ngrams=repeated_ngrams(hyp_counts),
        ref_repeated_ngrams=repeated_ngrams(ref_counts),
        max_ngram_excess=max(excess, 0),
        length_ratio=ratio,
        loop=excess >= min_repeats or ratio > max_length_ratio,
    )


def union_intervals(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted, merged [start, end) intervals; empty and inverted ones are dropped."""
    merged: list[list[float]] = []
    for start, end in sorted((s, e) for s, e in intervals if e > s):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def total_seconds(intervals: Iterable[tuple[float, float]]) -> float:
    """Length of the union of `intervals`."""
    return sum(e - s for s, e in union_intervals(intervals))


def overlap_seconds(a: Iterable[tuple[float, float]], b: Iterable[tuple[float, float]]) -> float:
    """Length of the intersection of the unions of `a` and `b` (two-pointer sweep, linear)."""
    ua, ub = union_intervals(a), union_intervals(b)
    i = j = 0
    total = 0.0
    while i < len(ua) and j < len(ub):
        lo, hi = max(ua[i][0], ub[j][0]), min(ua[i][1], ub[j][1])
        total += max(0.0, hi - lo)
        if ua[i][1] < ub[j][1]:
            i += 1
        else:
            j += 1
    return total
