"""Resume state of one transcription: an append-only JSONL journal, one line per finished window, fsync'd.

Line 1 is a header (model, options, language); every further line is a `WindowRecord`. A process killed
while writing leaves at most one torn last line, which is dropped (and cut off the file) when the journal is
reopened, so the window it described is simply decoded again. Anything else that is wrong (a bad line before
the last, a window twice or out of order: what two runs writing one journal at once leave) is refused with a
`JournalError` instead of being replayed. One writer per journal is the caller's job (`unique_asr.lock`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from unique_asr.coverage import Uncovered
from unique_asr.errors import OutputError, UniqueASRError
from unique_asr.stripes import striped
from unique_asr.types import Segment, Word

FORMAT = 1
# Options that change speed, not the transcript: a resumed run may differ in these.
_RUNTIME_OPTIONS = ("batch_size", "device", "dtype")


@dataclass(frozen=True)
class WindowRecord:
    """One finished window: its sample span, VAD speech seconds, the segments it produced, and the decoder
    prompt (previous text tokens) that the next window is conditioned on in sequential mode.
    no_speech: True when the window was judged silent (an explicit decision, not a dropped window).
    covered_s: its speech overlapped by its segments (None in journals written before it was recorded);
    uncovered: its speech stretches without segments, longer than the report threshold, with the reason;
    guard_stops / loops: its repetition-guard stops and emitted decodes that still repeat."""

    index: int
    start_sample: int
    end_sample: int
    speech_s: float
    segments: tuple[Segment, ...]
    prompt: tuple[int, ...] = ()
    no_speech: bool = False
    covered_s: float | None = None
    uncovered: tuple[Uncovered, ...] = ()
    guard_stops: int = 0
    loops: int = 0

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
            data.get("covered_s"),
            tuple(Uncovered(**u) for u in data.get("uncovered", ())),
            data.get("guard_stops", 0),
            data.get("loops", 0),
        )


def account(info, record: WindowRecord) -> None:
    """Add a finished window to info's (TranscriptionInfo) coverage, uncovered-speech and repetition-guard
    tallies: as it finishes, and again when a resumed run replays its record (both model families)."""
    info.windows += 1
    info.decoded_s += record.speech_s if record.covered_s is None else record.covered_s
    info.uncovered += [asdict(gap) for gap in record.uncovered]
    info.guard_stops += record.guard_stops
    info.loops += record.loops


class JournalError(UniqueASRError):
    """A journal cannot be used as it is: finished work would be lost or replayed wrongly."""


class JournalExists(JournalError):
    """A fresh start was asked for, but a journal of finished windows is there (kept, not deleted)."""


@dataclass
class Journal:
    """Finished windows of one transcription, kept at `path`.

    resume=True keeps what is there: `header` and `records` hold it, and `transcribe` replays those windows'
    segments and continues after them. resume=False starts afresh: a journal that holds finished windows is
    never dropped silently; it raises JournalExists (the file is kept) unless overwrite=True discards it.
    """

    path: Path
    resume: bool = True
    overwrite: bool = False
    header: dict | None = field(default=None, init=False)
    records: list[WindowRecord] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and not self.resume:
            if not self.overwrite:
                self._load()
                if self.records:
                    n = len(self.records)
                    raise JournalExists(
                        f"{self.path}: holds {n} finished window{'s' * (n != 1)} of an earlier run of this file "
                        "(kept); continue it with --resume, or discard it with --overwrite"
                    )
                self.header, self.records = None, []
            self.path.unlink()
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        lines = data.splitlines(keepends=True)
        good = 0
        for n, line in enumerate(lines, start=1):
            last = n == len(lines)
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("torn line")
                entry = json.loads(line)
                if self.header is None:
                    self.header = entry["header"]
                else:
                    self._check_order(WindowRecord.from_dict(entry), n)
            except (ValueError, KeyError, TypeError) as exc:
                if last:
                    break  # a torn final write: that window is decoded again
                raise JournalError(f"{self.path}: line {n} is not a journal entry ({exc}); "
                                   "discard the journal with --overwrite to start over") from None
            good += len(line)
        if good < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good)

    def _check_order(self, record: WindowRecord, line: int) -> None:
        """Windows are journaled once each, in order: index 0, 1, 2, ... over increasing, disjoint spans."""
        previous = self.records[-1] if self.records else None
        expected = previous.index + 1 if previous is not None else 0
        if record.index != expected or (previous is not None and record.start_sample < previous.end_sample):
            what = "twice" if any(r.index == record.index for r in self.records) else "out of order"
            raise JournalError(
                f"{self.path}: line {line} holds window {record.index} {what} (two runs wrote this journal "
                "at once?); it cannot be replayed safely: discard it with --overwrite to start over"
            )
        self.records.append(record)

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
                "discard it with --overwrite to start over"
            )

    def append(self, record: WindowRecord) -> None:
        """Record a finished window (durable before returning)."""
        if self.header is None:
            raise RuntimeError("Journal.start must be called before append")
        self._write(record.to_json())
        self.records.append(record)

    def _write(self, line: str) -> None:
        """Append one line, durably; on a full disk or a file-size limit, cut a partly written line off again
        (so the journal stays valid for --resume) and raise OutputError naming the journal."""
        data = (line + "\n").encode("utf-8")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write the progress journal ({exc.strerror or exc})") from None
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError as exc:
                try:
                    os.ftruncate(fd, size)
                except OSError:
                    pass  # a torn last line is dropped when the journal is read again
                raise OutputError(f"{self.path}: cannot write the progress journal ({exc.strerror or exc}); the "
                                  "finished windows before it are kept: run again with --resume once there is "
                                  "space") from None
        finally:
            os.close(fd)

    def finish(self) -> None:
        """The transcription's outputs are written: the journal is no longer needed."""
        self.path.unlink(missing_ok=True)


def _transcript_options(options: dict) -> dict:
    """Options as JSON round-trips them (tuples -> lists), minus those that do not change the transcript.
    Batched mode with the previous text keeps batch_size: it sets the stripes (unique_asr.stripes)."""
    in_stripes = striped(options.get("strategy"), options.get("stripe_windows", 0),
                         options.get("decode", {}).get("condition_on_previous_text", False))
    runtime = tuple(k for k in _RUNTIME_OPTIONS if not (in_stripes and k == "batch_size"))
    return json.loads(json.dumps({k: v for k, v in options.items() if k not in runtime}))
