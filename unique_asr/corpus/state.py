"""A corpus job's durable state, kept in `<output_dir>/.corpus/`, shared by every worker of the job.

- job.json: the model, transcript options and output formats the job was started with; a restart with other
  ones is refused (the finished files would not match the new ones).
- plan.jsonl: the items of the last start (with size/mtime, so a restart does not probe files again).
- claims/<kk>/<key>.json: written when a worker starts an item (worker, host, pid, attempt number).
- done/<kk>/<key>.json: the item's result record, written atomically after its transcripts: the commit.

An item is done when its commit record exists; claimed but not done means a worker stopped inside it (the
per-window journal next to its outputs lets the next attempt continue after the last finished window).
Workers on other hosts (Ray) need `output_dir` on a file system they all see.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

from unique_asr.config import TranscribeOptions
from unique_asr.corpus.plan import CorpusItem, plan_rows, read_jsonl
from unique_asr.errors import OutputError, UniqueASRError
from unique_asr.writers import write_atomic

STATE_DIR = ".corpus"
# Options that change speed, not the transcript: a restart may change them (the journal agrees, journal.py).
RUNTIME_OPTIONS = ("batch_size", "device", "dtype", "prefetch")


def job_identity(model: str, options: TranscribeOptions, formats: Sequence[str]) -> dict:
    """What a job's finished files depend on (JSON-shaped, so it compares equal after a round trip)."""
    opts = {k: v for k, v in asdict(options).items() if k not in RUNTIME_OPTIONS}
    return json.loads(json.dumps({"model": model, "options": opts, "formats": list(formats)}))


class JobState:
    """Claims, commits and the plan of one job folder. Every method is safe to call from many processes:
    records are written whole (temp file + rename), and each item is worked on by one worker at a time."""

    def __init__(self, output_dir: str | Path):
        self.output_dir = Path(output_dir)
        self.root = self.output_dir / STATE_DIR

    # ------------------------------------------------------------------ job
    def open(self, identity: dict) -> None:
        """Create the state folder, or check that an existing one was made by the same job."""
        path = self.root / "job.json"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if path.exists():
                old = json.loads(path.read_text(encoding="utf-8"))
                if old != identity:
                    changed = sorted(k for k in identity if old.get(k) != identity[k])
                    raise UniqueASRError(
                        f"{self.output_dir}: holds a corpus job started with another {', '.join(changed) or 'setup'};"
                        " use another --output_dir, or the same settings to continue it")
                return
            write_atomic(path, json.dumps(identity, ensure_ascii=False, indent=1) + "\n")
        except OSError as exc:
            raise OutputError(f"{self.root}: cannot write the job state ({exc.strerror or exc})") from exc

    def read_plan_cache(self) -> dict[str, dict]:
        path = self.root / "plan.jsonl"
        if not path.exists():
            return {}
        return {row["source"]: row for row in read_jsonl(path, skip_bad_last_line=True) if "source" in row}

    def write_plan(self, items: Sequence[CorpusItem]) -> None:
        write_atomic(self.root / "plan.jsonl", "".join(line + "\n" for line in plan_rows(items)))

    # ------------------------------------------------------------------ items
    def _path(self, kind: str, item: CorpusItem) -> Path:
        key = item.key
        return self.root / kind / key[:2] / f"{key}.json"

    def done(self, item: CorpusItem) -> dict | None:
        """The item's commit record, or None."""
        try:
            return json.loads(self._path("done", item).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError:
            return None  # cannot happen with atomic writes; treat as not done rather than crash

    def claim_of(self, item: CorpusItem) -> dict | None:
        try:
            return json.loads(self._path("claims", item).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None

    def claim(self, item: CorpusItem, worker: str) -> int:
        """Record that `worker` starts `item` now; returns the attempt number (1 for the first)."""
        previous = self.claim_of(item)
        attempt = (previous or {}).get("attempt", 0) + 1
        record = {"id": item.id, "worker": worker, "host": socket.gethostname(), "pid": os.getpid(),
                  "attempt": attempt, "started": time.time()}
        self._write(self._path("claims", item), record, durable=False)
        return attempt

    def commit(self, record: dict) -> None:
        """The item's transcripts are written: make its result durable. This is what marks it done."""
        self._write(self._path("done", CorpusItem(record["id"], record["source"])), record)

    def _write(self, path: Path, record: dict, durable: bool = True) -> None:
        """Whole-file write (temp file + rename). durable=False skips the fsync: a claim only counts attempts,
        and losing one to a power cut costs nothing (measured: claim + commit 18 ms a file with two fsyncs on
        the 2-core VM's disk, about half without the claim's)."""
        text = json.dumps(record, ensure_ascii=False) + "\n"
        try:
            if durable:
                write_atomic(path, text)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                tmp.write_text(text, encoding="utf-8")
                os.replace(tmp, path)
        except OSError as exc:
            raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from exc

    def results(self, items: Iterable[CorpusItem]) -> list[dict]:
        """One row per item in the given order: its commit record, or a 'pending' row."""
        rows = []
        for item in items:
            rows.append(self.done(item) or {"id": item.id, "source": item.source, "status": "pending",
                                             "duration_s": item.duration})
        return rows

    def write_results(self, path: Path, items: Sequence[CorpusItem]) -> list[dict]:
        rows = self.results(items)
        write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return rows
