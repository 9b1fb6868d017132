"""Per-window language choice for `language="auto"`: each window is decoded in the language detected on it,
unless that detection is less confident than a threshold, in which case the window keeps the language of the
window before it (a short or noisy window does not switch the language of a recording on a weak guess).
Standard library only: the detection itself is unique_asr.decoding.detect_language."""

from __future__ import annotations

from collections.abc import Sequence


def choose_languages(
    detected: Sequence[tuple[str, float]],
    previous: str | None,
    threshold: float,
    follows: Sequence[str | None] | None = None,
) -> list[str]:
    """Languages of consecutive windows from their (most likely language, its probability).

    A window takes its detected language when its probability is at least `threshold`, else the language of
    the nearest window decided before it: `previous` for the first (the language chosen before these windows),
    the one chosen for the window before it otherwise. follows (striped runs, one entry per window): where an
    entry is not None, that window's stripe has decided the window just before it, in that language, which
    it keeps instead. With nothing decided before (None), a window takes its most likely language whatever
    its probability.

    >>> choose_languages([("en", 0.99), ("cy", 0.31), ("de", 0.93), ("fr", 0.4)], None, 0.5)
    ['en', 'en', 'de', 'de']
    >>> choose_languages([("cy", 0.31), ("fr", 0.4)], "en", 0.5, follows=[None, "de"])
    ['en', 'de']
    """
    chosen = []
    for i, (code, probability) in enumerate(detected):
        before = follows[i] if follows is not None and follows[i] is not None else previous
        previous = code if before is None or probability >= threshold else before
        chosen.append(previous)
    return chosen
