"""The per-file step every launcher runs: claim -> journaled transcription -> transcripts -> commit.

Built on the public API only (`unique_asr.load_model(...).transcribe` and the writers), so a corpus job runs
whatever model family `load_model` returns. One `Worker` holds one loaded model and transcribes items one
after another; a file that fails is committed as a failed record and the worker goes on.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from unique_asr.config import TranscribeOptions
from unique_asr.corpus.plan import CorpusItem
from unique_asr.corpus.state import JobState
from unique_asr.errors import UniqueASRError
from unique_asr.journal import Journal
from unique_asr.lock import OutputLock
from unique_asr.runner import journal_path, lock_path
from unique_asr.writers import write_outputs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs (picklable: Ray ships it to its actors)."""

    model: str
    options: TranscribeOptions
    output_dir: Path
    formats: tuple[str, ...]
    max_attempts: int = 3
    retry_failed: bool = False


def output_place(output_dir: Path, item_id: str) -> tuple[Path, str]:
    """(folder, stem) of an item's transcripts: id 'talks/day1' -> (output_dir/talks, 'day1')."""
    folder, _, stem = item_id.rpartition("/")
    return (Path(output_dir) / folder if folder else Path(output_dir)), stem


def failed_record(item: CorpusItem, error: str, worker: str | None = None, attempt: int = 0) -> dict:
    return {"id": item.id, "source": item.source, "status": "failed", "duration_s": item.duration,
            "error": error, "worker": worker, "attempt": attempt, "finished": time.time()}


def pick_device(device: str, local_rank: int) -> str:
    """Device "auto"/"cuda" under a launcher with several processes on a host: cuda:<local_rank mod GPUs>
    (more processes than GPUs share them); anything explicit (cpu, cuda:1) is kept."""
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return f"cuda:{index}"
    return device


class Worker:
    """One model copy working through items. advance(seconds) is called as audio is transcribed (progress)."""

    def __init__(self, spec: JobSpec, name: str, device: str | None = None,
                 advance: Callable[[float], None] | None = None):
        import unique_asr

        self.spec, self.name = spec, name
        self.state = JobState(spec.output_dir)
        self.advance = advance or (lambda seconds: None)
        self._position = 0.0  # seconds of the current file reported to `advance`
        options = spec.options
        self.transcriber = unique_asr.load_model(spec.model, device=device or options.device, dtype=options.dtype,
                                                 sparsity=options.sparsity)
        check = getattr(self.transcriber, "check_options", None)
        if check is not None:
            check(options)  # ValueError for an option this model cannot honour, before any file

    def process(self, item: CorpusItem) -> dict:
        """Transcribe one item unless it is already committed; returns its commit record. Never raises for a
        bad file (its error is the record); OutputError on the state folder itself does raise."""
        done = self.state.done(item)
        if done is not None and (done.get("status") == "ok" or not self.spec.retry_failed):
            return done  # a retried task whose first run committed just before its worker was lost
        if item.error is not None:
            record = failed_record(item, item.error, self.name)
            self.state.commit(record)
            return record
        attempt = self.state.claim(item, self.name)
        started = time.perf_counter()
        folder, stem = output_place(self.spec.output_dir, item.id)
        resumed, self._position = 0, 0.0
        try:
            # one writer per output, whoever it is (another rank, a unique-transcribe run into the same folder)
            with OutputLock(lock_path(folder, stem), str(folder / stem)):
                journal = Journal(journal_path(folder, stem), resume=True)
                resumed = len(journal.records)
                try:
                    segments, info, paths = self._transcribe(item, journal, folder, stem)
                except Exception:
                    if not journal.records:
                        journal.finish()  # nothing finished: a journal would only be litter next to the outputs
                    raise
        except Exception as exc:  # a bad file must not stop the job: record it (one line) and go on
            log.debug("%s failed", item.source, exc_info=True)
            self.advance(max(0.0, (item.duration or 0.0) - self._position))  # a failed file is done work too
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if not isinstance(exc, UniqueASRError):
                message = f"{type(exc).__name__}: {message}"
            record = failed_record(item, message, self.name, attempt)
            record["resumed_windows"] = resumed
        else:
            wall = time.perf_counter() - started
            record = {
                "id": item.id, "source": item.source, "status": "ok", "duration_s": info.duration_s,
                "speech_s": info.speech_s, "decoded_s": info.decoded_s, "wall_s": round(wall, 3),
                "rtfx": round(info.duration_s / wall, 2) if wall > 0 else None, "segments": len(segments),
                "windows": info.windows, "resumed_windows": resumed, "language": info.language,
                "model": info.model, "outputs": [str(p.relative_to(self.spec.output_dir)) for p in paths],
                "worker": self.name, "host": socket.gethostname(), "attempt": attempt, "finished": time.time(),
            }
        self.state.commit(record)
        return record

    def _transcribe(self, item: CorpusItem, journal: Journal, folder: Path, stem: str):
        segments_iter, info = self.transcriber.transcribe(item.source, self.spec.options, journal=journal)
        segments = []
        for segment in segments_iter:
            segments.append(segment)
            if segment.end > self._position:
                self.advance(segment.end - self._position)
                self._position = segment.end
        paths = write_outputs(segments, info, folder, stem, self.spec.formats)
        journal.finish()
        if info.duration_s > self._position:
            self.advance(info.duration_s - self._position)  # silence after the last segment is done work too
        return segments, info, paths
