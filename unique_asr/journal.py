"""Resume state of one transcription: an append-only JSONL journal, one line per finished window, fsync'd.

Line 1 is a header (model, options, language); every further line is a `WindowRecord`. A process killed
while writing leaves at most one torn last line, which is dropped (and cut off the file) when the journal is
reopened, so the window it described is simply decoded again.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from unique_asr.errors import UniqueASRError
from unique_asr.types import Segment, Word

FORMAT = 1
# Options that change speed, not the transcript: a resumed run may differ in these.
_RUNTIME_OPTIONS = ("batch_size", "device", "dtype")


@dataclass(frozen=True)
class WindowRecord:
    """One finished window: its sample span, VAD speech seconds, the segments it produced, and the decoder
    prompt (previous text tokens) that the next window is conditioned on in sequential mode.
    no_speech: True when the window was judged silent (an explicit decision, not a dropped window)."""

    index: int
    start_sample: int
    end_sample: int
    speech_s: float
    segments: tuple[Segment, ...]
    prompt: tuple[int, ...] = ()
    no_speech: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict) -> "WindowRecord":
        segments = tuple(
            Segment(**{**s, "tokens": tuple(s["tokens"]), "words": tuple(Word(**w) for w in s["words"])})
            for s in data["segments"]
        )
        return cls(
            data["index"],
            data["start_sample"],
            data["end_sample"],
            data["speech_s"],
            segments,
            tuple(data.get("prompt", ())),
            data.get("no_speech", False),
        )


@dataclass
class Journal:
    """Finished windows of one transcription, kept at `path`.

    resume=False starts afresh (an old journal at `path` is removed); resume=True keeps what is there:
    `header` and `records` hold it, and `transcribe` replays those windows' segments and continues after them.
    """

    path: Path
    resume: bool = True
    header: dict | None = field(default=None, init=False)
    records: list[WindowRecord] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.resume and self.path.exists():
            self.path.unlink()
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        good = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # torn final write
            try:
                entry = json.loads(line)
                if self.header is None:
                    self.header = entry["header"]
                else:
                    self.records.append(WindowRecord.from_dict(entry))
            except (ValueError, KeyError, TypeError):
                break
            good += len(line)
        if good < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good)

    def start(
        self, model: str, options: dict, duration_s: float | None, language: str, language_probability: float
    ) -> None:
        """Write a fresh journal's header, or check that a resumed one was made for audio of the same
        duration (None: unknown, e.g. stdin) by the same model and options."""
        header = {
            "format": FORMAT,
            "model": model,
            "options": _transcript_options(options),
            "duration_s": None if duration_s is None else round(duration_s, 3),
            "language": language,
            "language_probability": language_probability,
        }
        if self.header is None:
            self.header = header
            self._write(json.dumps({"header": header}, ensure_ascii=False))
            return
        if any(self.header.get(key) != header[key] for key in ("model", "options", "duration_s")):
            raise UniqueASRError(
                f"{self.path}: this journal was written for other audio, by another model or with other "
                "options; "
                "run again without resume to start over"
            )

    def append(self, record: WindowRecord) -> None:
        """Record a finished window (durable before returning)."""
        if self.header is None:
            raise RuntimeError("Journal.start must be called before append")
        self._write(record.to_json())
        self.records.append(record)

    def _write(self, line: str) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def finish(self) -> None:
        """The transcription's outputs are written: the journal is no longer needed."""
        self.path.unlink(missing_ok=True)


def _transcript_options(options: dict) -> dict:
    """Options as JSON round-trips them (tuples -> lists), minus those that do not change the transcript."""
    return json.loads(json.dumps({k: v for k, v in options.items() if k not in _RUNTIME_OPTIONS}))
