"""Per-window language choice for `language="auto"`: each window is decoded in the language detected on it,
unless that detection is less confident than a threshold, in which case the window keeps the language of the
window before it (a short or noisy window does not switch the language of a recording on a weak guess).
Standard library only: the detection itself is unique_asr.decoding.detect_language."""

from __future__ import annotations

from collections.abc import Sequence


def choose_languages(detected: Sequence[tuple[str, float]], previous: str | None, threshold: float) -> list[str]:
    """Languages of consecutive windows from their (most likely language, its probability).

    A window takes its detected language when its probability is at least `threshold`, else `previous` (the
    language chosen for the window before it); the first window of a recording (previous None) takes its
    most likely language whatever its probability.

    >>> choose_languages([("en", 0.99), ("cy", 0.31), ("de", 0.93), ("fr", 0.4)], None, 0.5)
    ['en', 'en', 'de', 'de']
    """
    chosen = []
    for code, probability in detected:
        if previous is None or probability >= threshold:
            previous = code
        chosen.append(previous)
    return chosen
