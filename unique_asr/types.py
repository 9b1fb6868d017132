"""Result types: what `transcribe` yields and returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    word: str
    probability: float


@dataclass(frozen=True)
class Segment:
    """One decoded stretch of speech; times are seconds from the start of the file."""

    id: int
    start: float
    end: float
    text: str
    tokens: tuple[int, ...] = ()
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    temperature: float = 0.0
    words: tuple[Word, ...] = ()
    language: str | None = None  # the language the window was decoded in (per window with language="auto")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TranscriptionInfo:
    """Facts about one transcription; the coverage fields fill in as the segment iterator runs.

    speech_s: VAD-detected speech (s); decoded_s: the part of it that emitted segments overlap;
    uncovered: detected speech stretches longer than TranscribeOptions.report_uncovered_s without any
    segment, as {"start", "end", "why"} (why: no-speech, guard-stop, empty-text, pass-limit, skipped);
    guard_stops: decode attempts the repetition guard stopped; loops: emitted decodes that still repeat.
    """

    language: str
    language_probability: float
    duration_s: float
    model: str
    options: dict = field(default_factory=dict)
    speech_s: float = 0.0
    decoded_s: float = 0.0
    windows: int = 0
    uncovered: list[dict] = field(default_factory=list)
    guard_stops: int = 0
    loops: int = 0
    attention: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)
