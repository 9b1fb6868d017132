"""What a corpus job transcribes: items from folders/globs or a JSONL manifest, their durations, their order.

Work is balanced by audio duration, not by file count: items run longest first (a long file started last
would keep one worker busy after the others finished), and `assign` splits them over workers with the
longest-processing-time rule (each item to the worker with the least audio so far). Both are pure functions
of the item list, so every rank of a torchrun job computes the same shards.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from unique_asr.audio import probe
from unique_asr.cli import expand_inputs
from unique_asr.errors import UniqueASRError
from unique_asr.jsonl import read_jsonl


@dataclass(frozen=True)
class CorpusItem:
    """One recording. id: unique in the job, also its output name (may hold '/': a subfolder of the output
    folder). duration: seconds, None when unknown. error: why it cannot be transcribed (found while
    planning: missing, unreadable header), recorded as a failure without sending it to a worker."""

    id: str
    source: str
    duration: float | None = None
    error: str | None = None

    @property
    def key(self) -> str:
        """File-system-safe name of the item's claim and commit records."""
        return hashlib.sha1(self.id.encode("utf-8")).hexdigest()

    def to_dict(self) -> dict:
        return asdict(self)


def _clean_id(raw: str) -> str | None:
    """An id usable as a relative output path (no absolute path, no '..', no empty part), else None."""
    parts = PurePosixPath(raw.replace(os.sep, "/")).parts
    if not parts or parts[0] == "/" or any(p in ("..", ".", "") for p in parts):
        return None
    return "/".join(parts)


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    taken.add(candidate)
    return candidate


def items_from_inputs(inputs: Sequence[str]) -> list[CorpusItem]:
    """Files, folders (recursive: the id keeps the subfolder, so a/x.wav and b/x.wav do not collide) and
    globs. A missing input becomes an item with an error, so the result manifest accounts for it."""
    items, taken = [], set()
    for item in inputs:
        if item == "-":
            items.append(CorpusItem(_unique("stdin", taken), "-", None, "-: standard input cannot be split over workers"))
            continue
        sources, problems = expand_inputs([item])
        root = Path(item) if Path(item).is_dir() else None
        for source in sources:
            rel = Path(source).relative_to(root) if root is not None else Path(Path(source).name)
            items.append(CorpusItem(_unique(rel.with_suffix("").as_posix(), taken), source))
        for problem in problems:
            items.append(CorpusItem(_unique(Path(item).stem or "input", taken), item, None, problem))
    return _dedupe_sources(items)


def _dedupe_sources(items: list[CorpusItem]) -> list[CorpusItem]:
    """A file named twice (a folder and a glob over it) is transcribed once."""
    seen, kept = set(), []
    for item in items:
        ident = os.path.realpath(item.source) if item.error is None else ("error", item.id)
        if ident not in seen:
            seen.add(ident)
            kept.append(item)
    return kept


def items_from_manifest(path: str | Path) -> list[CorpusItem]:
    """Lines of a dataset manifest (scripts/prepare_data.py's format): "path" (or "audio") relative to the
    manifest's folder, optional "id" (default: the file name without suffix) and "duration" (seconds)."""
    path = Path(path)
    if not path.is_file():
        raise UniqueASRError(f"{path}: manifest not found")
    items, taken = [], set()
    for lineno, row in enumerate(read_jsonl(path), 1):
        rel = row.get("path", row.get("audio")) if isinstance(row, dict) else None
        if not isinstance(rel, str) or not rel:
            raise UniqueASRError(f"{path}:{lineno}: a manifest line needs a \"path\" to the audio")
        raw_id = str(row.get("id", PurePosixPath(rel).with_suffix("").as_posix()))
        clean = _clean_id(raw_id)
        source = str(path.parent / rel)
        duration = row.get("duration")
        if clean is None:
            items.append(CorpusItem(_unique(f"bad-id-{lineno}", taken), source, None,
                                    f"{path}:{lineno}: id {raw_id!r} cannot name an output file"))
            continue
        if clean in taken:
            raise UniqueASRError(f"{path}:{lineno}: duplicate id {raw_id!r}")
        taken.add(clean)
        items.append(CorpusItem(clean, source, float(duration) if isinstance(duration, (int, float)) else None))
    if not items:
        raise UniqueASRError(f"{path}: manifest holds no recordings")
    return items


def _stat_key(source: str) -> list | None:
    try:
        st = os.stat(source)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def with_durations(items: Sequence[CorpusItem], cache: dict[str, dict] | None = None,
                   threads: int = 16) -> list[CorpusItem]:
    """Fill unknown durations by probing headers (threads: probing is I/O and ffprobe subprocesses). A file
    that cannot be probed gets its error. cache: source -> {"duration", "stat"} of an earlier plan; a file
    whose size and mtime are unchanged is not probed again (a restarted 100k-file job starts quickly)."""
    cache = cache or {}

    def fill(item: CorpusItem) -> CorpusItem:
        if item.error is not None or item.duration is not None:
            return item
        hit = cache.get(item.source)
        if hit is not None and hit.get("stat") == _stat_key(item.source) and hit.get("duration") is not None:
            return CorpusItem(item.id, item.source, hit["duration"])
        try:
            duration = probe(item.source).duration_s
        except UniqueASRError as exc:
            return CorpusItem(item.id, item.source, None, str(exc))
        return CorpusItem(item.id, item.source, duration)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(fill, items))


def plan_rows(items: Sequence[CorpusItem]) -> list[str]:
    """JSONL lines of a plan (with each file's size and mtime, for `with_durations`' cache)."""
    return [json.dumps({**item.to_dict(), "stat": _stat_key(item.source)}, ensure_ascii=False) for item in items]


def longest_first(items: Sequence[CorpusItem]) -> list[CorpusItem]:
    """Longest audio first; ties (and unknown durations, last) by id, so the order is reproducible."""
    return sorted(items, key=lambda it: (-(it.duration or 0.0), it.id))


def assign(items: Sequence[CorpusItem], workers: int) -> list[list[CorpusItem]]:
    """Longest-processing-time shards: items longest first, each to the worker with the least audio so far
    (ties to the lowest worker index). Deterministic for a given item list; each shard is longest first."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    shards: list[list[CorpusItem]] = [[] for _ in range(workers)]
    heap = [(0.0, w) for w in range(workers)]
    for item in longest_first(items):
        load, w = heapq.heappop(heap)
        shards[w].append(item)
        heapq.heappush(heap, (load + (item.duration or 0.0), w))
    return shards
