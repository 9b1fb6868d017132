"""Word-timing error against reference word times: match words in order by their normalised text, then
|start - start_ref| and |end - end_ref| per matched word (used by tests and scripts/word_timing.py)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np


def _norm(word: str) -> str:
    return re.sub(r"[^a-z0-9']", "", word.lower())


def timing_errors(words: Sequence, reference: Sequence[dict], lookahead: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(start errors, end errors) in seconds of the hypothesis words (objects with .word/.start/.end) that match
    a reference word ({"word", "start", "end"}) within `lookahead` positions, in order."""
    hyp = [(_norm(w.word), w.start, w.end) for w in words]
    starts, ends, j = [], [], 0
    for ref in reference:
        target = _norm(ref["word"])
        for k in range(j, min(j + lookahead, len(hyp))):
            if hyp[k][0] == target:
                starts.append(abs(hyp[k][1] - ref["start"]))
                ends.append(abs(hyp[k][2] - ref["end"]))
                j = k + 1
                break
    return np.array(starts), np.array(ends)
