"""Dataset manifests in, result manifests out (JSON Lines), with crash-safe resumption.

Dataset manifest line: {"id", "path" (relative to the manifest), "duration" (s), "text", optional
"sample_rate", "segments" [{"id", "start", "end", "text"}], "entities" [str]}.
Result manifest line: the run description (model, dataset, normaliser, transcribe / decode / sparsity
options) plus per file: id, reference, hypothesis, duration, speech_s, decoded_s, wall_s, segments
[{"start", "end", "text"}], reference_segments, entities, attention.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unique_asr.errors import OutputError, UniqueASRError
from unique_asr.jsonl import read_jsonl

RUN_KEYS = ("model", "dataset", "normaliser", "transcribe", "decode", "sparsity")


@dataclass(frozen=True)
class DatasetItem:
    """One recording of a dataset manifest; `audio` is resolved against the manifest's folder."""

    id: str
    audio: Path
    duration: float
    text: str
    segments: tuple[dict, ...] = ()
    entities: tuple[str, ...] | None = None
    sample_rate: int | None = None


def load_dataset(manifest: str | Path, limit: int | None = None) -> list[DatasetItem]:
    """Items of a dataset manifest, in file order (the first `limit` when given)."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise UniqueASRError(f"dataset manifest not found: {manifest}")
    items = []
    for row in read_jsonl(manifest):
        try:
            entities = row.get("entities")
            items.append(
                DatasetItem(
                    id=str(row["id"]),
                    audio=(manifest.parent / row["path"]).resolve(),
                    duration=float(row["duration"]),
                    text=str(row["text"]),
                    segments=tuple(row.get("segments") or ()),
                    entities=None if entities is None else tuple(entities),
                    sample_rate=row.get("sample_rate"),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UniqueASRError(
                f"{manifest}: item {row.get('id', '?')!r} lacks id/path/duration/text ({exc})"
            ) from exc
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise UniqueASRError(f"{manifest}: duplicate ids")
    return items[:limit] if limit is not None else items


def completed(output: str | Path, run: dict) -> set[str]:
    """Ids already in a result manifest; raises if those results came from a different run config."""
    output = Path(output)
    if not output.is_file():
        return set()
    run = json.loads(json.dumps(run))
    done = set()
    for row in read_jsonl(output, skip_bad_last_line=True):
        theirs = {k: row.get(k) for k in RUN_KEYS}
        if theirs != {k: run.get(k) for k in RUN_KEYS}:
            diff = sorted(k for k in RUN_KEYS if theirs[k] != run.get(k))
            raise UniqueASRError(
                f"{output} holds results of another configuration (differs in {', '.join(diff)}); "
                "choose another output file"
            )
        done.add(str(row["id"]))
    return done


def pending(items: Iterable[DatasetItem], done: set[str]) -> list[DatasetItem]:
    """Items whose id is not in `done`, in order."""
    return [item for item in items if item.id not in done]


class ManifestWriter:
    """Appends one JSON line per result, flushed and fsynced, so a crash loses at most the item in flight.

    A torn last line left by an earlier crash is cut off before appending.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a+b")  # noqa: SIM115 (held open across appends)
            self._drop_torn_tail()
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror}") from exc

    def _drop_torn_tail(self) -> None:
        self._file.seek(0)
        data = self._file.read()
        if data and not data.endswith(b"\n"):
            self._file.truncate(data.rfind(b"\n") + 1)

    def append(self, record: dict) -> None:
        try:
            self._file.write((json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8"))
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror}") from exc

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ManifestWriter:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _get(obj: Any, name: str, default: Any = None) -> Any:
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


def make_record(item: DatasetItem, segments: Sequence[Any], info: Any, wall_s: float, run: dict) -> dict:
    """One result line from a transcription: `segments` and `info` are Segment / TranscriptionInfo (or dicts)."""
    segs = []
    for s in segments:
        seg = {"start": float(_get(s, "start")), "end": float(_get(s, "end")), "text": str(_get(s, "text")).strip()}
        words = _get(s, "words") or ()
        if words:  # word timestamps, when the transcription made them (the HTML viewer highlights them)
            seg["words"] = [{"word": str(_get(w, "word")), "start": float(_get(w, "start")),
                             "end": float(_get(w, "end"))} for w in words]
        segs.append(seg)
    return {
        **run,
        "id": item.id,
        "audio": str(item.audio),
        "reference": item.text,
        "hypothesis": " ".join(s["text"] for s in segs if s["text"]),
        "duration": item.duration,
        "speech_s": float(_get(info, "speech_s", 0.0)),
        "decoded_s": float(_get(info, "decoded_s", 0.0)),
        "wall_s": float(wall_s),
        "language": _get(info, "language"),
        "attention": _get(info, "attention", {}),
        "segments": segs,
        "reference_segments": [{"start": s["start"], "end": s["end"]} for s in item.segments],
        "entities": None if item.entities is None else list(item.entities),
    }


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    """Write rows as a JSONL file atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from exc
    return path
