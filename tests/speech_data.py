"""Real recorded speech shipped with the tests (tests/data/speech, licences in its LICENSE.md).

`clip(name)` reads one clip as float32 16 kHz mono; `joined(names, gap_s)` builds a longer recording from clips
with silence between them and returns the reference text and each utterance's (start, end) in the joined audio,
so tests that need long or multi-speaker input build it here instead of synthesising speech."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

SPEECH_DIR = Path(__file__).resolve().parent / "data" / "speech"
SAMPLE_RATE = 16000
AUSTEN = ["austen_0870", "austen_0880", "austen_0890", "austen_0920", "austen_0930"]


@dataclass(frozen=True)
class Utterance:
    name: str
    text: str
    start: float  # seconds in the joined audio
    end: float
    words: tuple  # ({"word", "start", "end"}, ...) in the joined audio's time


@lru_cache(maxsize=None)
def manifest() -> dict[str, dict]:
    rows = [json.loads(line) for line in (SPEECH_DIR / "manifest.jsonl").read_text().splitlines() if line.strip()]
    return {Path(row["audio"]).stem: row for row in rows}


def path(name: str) -> Path:
    return SPEECH_DIR / manifest()[name]["audio"]


def text(name: str) -> str:
    return manifest()[name]["text"]


@lru_cache(maxsize=None)
def _read(name: str) -> np.ndarray:
    audio, rate = sf.read(path(name), dtype="float32")
    assert rate == SAMPLE_RATE and audio.ndim == 1, (name, rate, audio.shape)
    audio.setflags(write=False)
    return audio


def clip(name: str) -> np.ndarray:
    """One clip, float32 16 kHz mono (a fresh writable copy)."""
    return _read(name).copy()


def joined(names: list[str], gap_s: float = 0.5, lead_s: float = 0.0) -> tuple[np.ndarray, list[Utterance]]:
    """Clips joined with `gap_s` of silence between them (and `lead_s` before the first)."""
    parts = [np.zeros(int(round(lead_s * SAMPLE_RATE)), np.float32)]
    utterances = []
    at = len(parts[0])
    for i, name in enumerate(names):
        if i:
            gap = np.zeros(int(round(gap_s * SAMPLE_RATE)), np.float32)
            parts.append(gap)
            at += len(gap)
        audio = _read(name)
        start = at / SAMPLE_RATE
        words = tuple({"word": w["word"], "start": start + w["start"], "end": start + w["end"]}
                      for w in manifest()[name]["words"])
        utterances.append(Utterance(name, text(name), start, start + len(audio) / SAMPLE_RATE, words))
        parts.append(audio)
        at += len(audio)
    return np.concatenate(parts), utterances


def reference(names: list[str]) -> str:
    return " ".join(text(name) for name in names)


def normalised_words(text: str) -> list[str]:
    """Words after Whisper's English normaliser (the project's scoring convention: 'Mr.' = 'mister', '10' = 'ten')."""
    from unique_asr.eval.normalise import words

    return words(text)


def wer(hypothesis: str, reference_text: str) -> float:
    """Word error rate of `hypothesis` against `reference_text`, both normalised the same way."""
    import jiwer

    return jiwer.wer(" ".join(normalised_words(reference_text)), " ".join(normalised_words(hypothesis)) or "<empty>")
