"""Text normalisers applied identically to reference and hypothesis before scoring.

"whisper_english" is Whisper's English normaliser (the Open ASR Leaderboard convention: spelling,
numbers, contractions, punctuation, casing); "whisper_basic" is Whisper's language-agnostic one
(casing, punctuation, bracketed non-speech) for other languages. The name is recorded with each result.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from whisper_normalizer.basic import BasicTextNormalizer
from whisper_normalizer.english import EnglishTextNormalizer

NORMALISERS: dict[str, Callable[[], Callable[[str], str]]] = {
    "whisper_english": EnglishTextNormalizer,
    "whisper_basic": BasicTextNormalizer,
}
DEFAULT_NORMALISER = "whisper_english"


@cache
def get_normaliser(name: str) -> Callable[[str], str]:
    """The normaliser called `name` (built once: the English one compiles many regexes)."""
    if name not in NORMALISERS:
        raise ValueError(f"unknown normaliser {name!r}; choose one of {', '.join(NORMALISERS)}")
    return NORMALISERS[name]()


def normalise(text: str, name: str = DEFAULT_NORMALISER) -> str:
    """`text` normalised by `name`, with whitespace collapsed to single spaces."""
    return " ".join(get_normaliser(name)(text).split())


def words(text: str, name: str = DEFAULT_NORMALISER) -> list[str]:
    """Normalised words of `text`."""
    return get_normaliser(name)(text).split()
