"""Scores of a result manifest: WER/CER with S/D/I, entity error rate, telemetry, coverage, RTFx.

Corpus rates pool counts over files (total errors / total reference words), the usual convention.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from unique_asr.errors import UniqueASRError
from unique_asr.eval.align import Alignment, ErrorCounts, align
from unique_asr.eval.entities import entity_hits
from unique_asr.eval.manifest import read_jsonl
from unique_asr.eval.normalise import DEFAULT_NORMALISER, get_normaliser
from unique_asr.eval.telemetry import Telemetry, overlap_seconds, telemetry, total_seconds


@dataclass
class Confusions:
    """Most frequent word-level errors: (ref, hyp) substitutions, deleted and inserted words."""

    substitutions: Counter = field(default_factory=Counter)
    deletions: Counter = field(default_factory=Counter)
    insertions: Counter = field(default_factory=Counter)

    def update(self, other: Confusions) -> None:
        self.substitutions.update(other.substitutions)
        self.deletions.update(other.deletions)
        self.insertions.update(other.insertions)


def confusions(ref: Sequence[str], hyp: Sequence[str], alignment: Alignment) -> Confusions:
    """Word errors of one alignment (replace spans pair up position by position)."""
    out = Confusions()
    for tag, i1, i2, j1, j2 in alignment.edits:
        if tag == "replace":
            out.substitutions.update(zip(ref[i1:i2], hyp[j1:j2]))
        elif tag == "delete":
            out.deletions.update(ref[i1:i2])
        else:
            out.insertions.update(hyp[j1:j2])
    return out


@dataclass
class Scores:
    """Counts and times shared by one file's and a corpus's scores, and the rates derived from them.
    Times in seconds; `speech_s` is reference speech (segments, else duration); `vad_speech_s` /
    `decoded_s` are the transcriber's own account (speech it detected / decoded)."""

    words: ErrorCounts
    chars: ErrorCounts
    entities_found: int
    entities_total: int
    duration: float
    wall_s: float
    speech_s: float
    covered_s: float
    vad_speech_s: float
    decoded_s: float
    confusions: Confusions

    @property
    def wer(self) -> float:
        return self.words.error_rate

    @property
    def cer(self) -> float:
        return self.chars.error_rate

    @property
    def entity_error_rate(self) -> float:
        return 1.0 - self.entities_found / self.entities_total if self.entities_total else math.nan

    @property
    def insertion_rate(self) -> float:
        n = self.words.reference_length
        return self.words.insertions / n if n else math.nan

    @property
    def coverage(self) -> float:
        return self.covered_s / self.speech_s if self.speech_s > 0 else math.nan

    @property
    def decoded_share(self) -> float:
        """Decoded seconds / speech seconds the transcriber detected (below 1: it skipped speech)."""
        return self.decoded_s / self.vad_speech_s if self.vad_speech_s > 0 else math.nan

    @property
    def rtfx(self) -> float:
        """Audio seconds per wall second."""
        return self.duration / self.wall_s if self.wall_s > 0 else math.nan


@dataclass
class ItemScore(Scores):
    """Scores of one file."""

    id: str
    telemetry: Telemetry


def _speech_spans(record: Mapping) -> list[tuple[float, float]]:
    segs = record.get("reference_segments") or []
    return [(s["start"], s["end"]) for s in segs] or [(0.0, float(record["duration"]))]


def score_record(
    record: Mapping, normaliser: str = DEFAULT_NORMALISER, entities: Iterable[str] | None = None, **loop
) -> ItemScore:
    """Score one result line; `entities` overrides the line's own list; `loop` goes to `telemetry()`."""
    norm = get_normaliser(normaliser)
    ref_text, hyp_text = (
        " ".join(norm(record["reference"]).split()),
        " ".join(norm(record["hypothesis"]).split()),
    )
    ref, hyp = ref_text.split(), hyp_text.split()
    word_alignment = align(ref, hyp)
    entities = record.get("entities") if entities is None else entities
    found, total = entity_hits(entities or (), hyp_text, norm)
    speech = _speech_spans(record)
    hyp_spans = [(s["start"], s["end"]) for s in record.get("segments") or []]
    return ItemScore(
        id=str(record["id"]),
        words=word_alignment.counts,
        chars=align(ref_text, hyp_text).counts,
        entities_found=found,
        entities_total=total,
        telemetry=telemetry(ref, hyp, **loop),
        duration=float(record["duration"]),
        wall_s=float(record.get("wall_s") or 0.0),
        speech_s=total_seconds(speech),
        covered_s=overlap_seconds(hyp_spans, speech),
        vad_speech_s=float(record.get("speech_s") or 0.0),
        decoded_s=float(record.get("decoded_s") or 0.0),
        confusions=confusions(ref, hyp, word_alignment),
    )


@dataclass
class CorpusScore(Scores):
    """Pooled scores over files."""

    files: int
    loops: int
    repeated_ngrams: int


def pool(items: Sequence[ItemScore]) -> CorpusScore:
    """Pool per-file scores into corpus scores."""
    conf = Confusions()
    for item in items:
        conf.update(item.confusions)
    return CorpusScore(
        files=len(items),
        words=sum((i.words for i in items), ErrorCounts()),
        chars=sum((i.chars for i in items), ErrorCounts()),
        entities_found=sum(i.entities_found for i in items),
        entities_total=sum(i.entities_total for i in items),
        loops=sum(i.telemetry.loop for i in items),
        repeated_ngrams=sum(i.telemetry.repeated_ngrams for i in items),
        duration=sum(i.duration for i in items),
        wall_s=sum(i.wall_s for i in items),
        speech_s=sum(i.speech_s for i in items),
        covered_s=sum(i.covered_s for i in items),
        vad_speech_s=sum(i.vad_speech_s for i in items),
        decoded_s=sum(i.decoded_s for i in items),
        confusions=conf,
    )


@dataclass
class ManifestScore:
    """A scored result manifest: its run description, per-file and pooled scores."""

    path: Path
    run: dict
    normaliser: str
    items: list[ItemScore]
    corpus: CorpusScore


def score_manifest(
    path: str | Path,
    normaliser: str | None = None,
    entities: Mapping[str, list[str]] | None = None,
    **loop,
) -> ManifestScore:
    """Score every line of a result manifest with one normaliser (the manifest's own unless given)."""
    records = list(read_jsonl(path, skip_bad_last_line=True))
    if not records:
        raise UniqueASRError(f"{path}: no results to score")
    recorded = {r.get("normaliser") for r in records} - {None}
    if normaliser is None:
        if len(recorded) > 1:
            raise UniqueASRError(f"{path}: lines name different normalisers {sorted(recorded)}; pass one")
        normaliser = recorded.pop() if recorded else DEFAULT_NORMALISER
    items = [score_record(r, normaliser, (entities or {}).get(str(r["id"])), **loop) for r in records]
    run = {k: records[0].get(k) for k in ("model", "dataset", "transcribe", "decode", "sparsity")}
    return ManifestScore(Path(path), run, normaliser, items, pool(items))
