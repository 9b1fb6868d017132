"""Turn standard long-form sets into dataset manifests (the format of ../shared/data).

Each `prepare_*` writes `<out_dir>/manifest.jsonl`, one line per recording: id, path (relative to
out_dir), duration (s), sample_rate, text, and segments [{id, start, end, text}] where the source has
times. Audio is read and written with soundfile (no torch); sources that are already one file per
recording (TED-LIUM .sph, Earnings .mp3, a folder) are referenced in place, not copied.
"""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from unique_asr.errors import AudioError, MissingToolError, UniqueASRError
from unique_asr.eval.manifest import write_jsonl

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".sph", ".aiff", ".aif")
# spaCy/OntoNotes classes that name things; Earnings also tags numbers, dates, contractions, ...
NAMED_ENTITY_CLASSES = (
    "PERSON",
    "ORG",
    "GPE",
    "LOC",
    "NORP",
    "FAC",
    "PRODUCT",
    "EVENT",
    "WORK_OF_ART",
    "LAW",
    "LANGUAGE",
)
_NON_SPEECH = re.compile(r"^[<{\[].*[>}\]]$")


def _info(path: Path) -> sf._SoundFileInfo:
    try:
        return sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise AudioError(f"cannot read audio {path}: {exc}") from exc


def _row(
    rid: str, audio: Path, out_dir: Path, text: str, segments: Sequence[dict] | None = None, **extra
) -> dict:
    info = _info(audio)
    row = {
        "id": rid,
        "path": os.path.relpath(audio.resolve(), out_dir.resolve()),
        "duration": round(info.duration, 3),
        "sample_rate": info.samplerate,
        "text": text,
    }
    if segments is not None:
        row["segments"] = list(segments)
    return {**row, **extra}


def _write(out_dir: Path, rows: list[dict], what: str) -> Path:
    if not rows:
        raise UniqueASRError(f"no {what} found")
    return write_jsonl(out_dir / "manifest.jsonl", rows)


# ---- TED-LIUM 3 (stm + sph) ----


def clean_tedlium_text(words: str) -> str:
    """Drop non-speech tokens (<unk>, {noise}, [x]) and glue split contractions ("i 'd" -> "i'd")."""
    kept = [w for w in words.split() if not _NON_SPEECH.match(w)]
    return re.sub(r" '(\w)", r"'\1", " ".join(kept))


def parse_stm(path: str | Path) -> list[dict]:
    """Scored segments of an stm file, in time order: {talk, start, end, text}.

    stm line: `talk channel speaker start end <label> words...`; segments whose words are
    `ignore_time_segment_in_scoring` are dropped, as in the official scoring.
    """
    segments = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith(";;"):
            continue
        fields = line.split()
        if len(fields) < 5:
            raise UniqueASRError(f"{path}: not an stm line: {line!r}")
        words = fields[5:]
        if words and words[0].startswith("<") and words[0].endswith(">"):  # optional <label> field
            words = words[1:]
        if words == ["ignore_time_segment_in_scoring"]:
            continue
        text = clean_tedlium_text(" ".join(words))
        if text:
            segments.append(
                {"talk": fields[0], "start": float(fields[3]), "end": float(fields[4]), "text": text}
            )
    return sorted(segments, key=lambda s: s["start"])


def prepare_tedlium(root: str | Path, out_dir: str | Path) -> Path:
    """TED-LIUM 3 split folder (stm/*.stm, sph/*.sph) -> one manifest line per talk."""
    root, out_dir = Path(root), Path(out_dir)
    rows = []
    for stm in sorted(root.rglob("*.stm")):
        segs = parse_stm(stm)
        audio = next(iter(sorted(root.rglob(stm.stem + ".sph"))), None)
        if audio is None:
            raise UniqueASRError(f"no {stm.stem}.sph under {root} for {stm}")
        segments = [
            {"id": f"{stm.stem}-{k:04d}", "start": s["start"], "end": s["end"], "text": s["text"]}
            for k, s in enumerate(segs)
        ]
        rows.append(_row(stm.stem, audio, out_dir, " ".join(s["text"] for s in segs), segments))
    return _write(out_dir, rows, f"stm files under {root}")


# ---- Earnings-21/22 (.nlp token tables) ----


@dataclass(frozen=True)
class NlpTranscript:
    """Text of an .nlp reference and its entity mentions as (words, class)."""

    text: str
    entities: tuple[tuple[str, str], ...]


def _ids(cell: str) -> list[str]:
    cell = cell.strip()
    return [str(x) for x in ast.literal_eval(cell)] if cell else []


def parse_nlp(path: str | Path, wer_tags: dict | None = None) -> NlpTranscript:
    """Read a Rev .nlp file (`token|speaker|ts|endTs|punctuation|case|tags|wer_tags`).

    Text is each token followed by its punctuation. Tokens sharing an entity id in `wer_tags` form one
    mention; its class comes from the sidecar `wer_tags` json ({id: {"entity_type": ...}}) or else from
    the `tags` column (`'id:CLASS'`).
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    header = lines[0].split("|") if lines else []
    if header[:1] != ["token"] or "punctuation" not in header:
        raise UniqueASRError(f"{path}: not an .nlp file (header {lines[:1]})")
    col = {name: k for k, name in enumerate(header)}
    words, mentions, classes = [], {}, {}
    for line in lines[1:]:
        cells = line.split("|")
        if len(cells) < len(header):
            continue
        words.append(cells[col["token"]] + cells[col["punctuation"]])
        for tag in _ids(cells[col["tags"]]) if "tags" in col else []:
            tid, _, cls = tag.partition(":")
            classes.setdefault(tid, cls)
        for tid in _ids(cells[col["wer_tags"]]) if "wer_tags" in col else []:
            mentions.setdefault(tid, []).append(cells[col["token"]])
    for tid, meta in (wer_tags or {}).items():
        classes[str(tid)] = meta.get("entity_type", classes.get(str(tid), ""))
    entities = tuple((" ".join(toks), classes.get(tid, "")) for tid, toks in mentions.items())
    return NlpTranscript(" ".join(w for w in words if w), entities)


def prepare_earnings(
    root: str | Path, out_dir: str | Path, classes: Iterable[str] = NAMED_ENTITY_CLASSES
) -> Path:
    """Earnings-21/22 folder (**/*.nlp, **/<id>.wer_tag.json, audio <id>.mp3|wav) -> manifest with the
    named-entity mentions of the wanted `classes` in each line's "entities"."""
    root, out_dir = Path(root), Path(out_dir)
    wanted = set(classes)
    audio_by_id = {p.stem: p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES}
    rows = []
    for nlp in sorted(root.rglob("*.nlp")):
        rid = nlp.name.split(".")[0]
        if rid not in audio_by_id:
            raise UniqueASRError(f"no audio named {rid}.* under {root} for {nlp}")
        sidecar = next(iter(root.rglob(f"{rid}.wer_tag.json")), None)
        parsed = parse_nlp(nlp, json.loads(sidecar.read_text(encoding="utf-8")) if sidecar else None)
        entities = [words for words, cls in parsed.entities if cls in wanted]
        rows.append(_row(rid, audio_by_id[rid], out_dir, parsed.text, entities=entities))
    return _write(out_dir, rows, f".nlp files under {root}")


# ---- LibriSpeech chapters joined into long files ----


def _chapter_utterances(trans: Path) -> list[tuple[str, str]]:
    out = []
    for line in trans.read_text(encoding="utf-8").splitlines():
        if line.strip():
            uid, _, text = line.partition(" ")
            out.append((uid, text.strip()))
    return out


def join_chapter(trans: Path, audio_out: Path, gap_s: float = 0.5) -> tuple[float, int, list[dict]]:
    """Join a LibriSpeech chapter's utterances in order, `gap_s` of silence between them, into one FLAC.

    Streams utterance by utterance (bounded memory). Returns (duration_s, sample_rate, segments).
    """
    utts = _chapter_utterances(trans)
    if not utts:
        raise UniqueASRError(f"{trans}: no utterances")
    rate = _info(trans.parent / f"{utts[0][0]}.flac").samplerate
    gap = np.zeros((round(gap_s * rate),), dtype=np.int16)
    segments, pos = [], 0
    audio_out.parent.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(
        str(audio_out), "w", samplerate=rate, channels=1, format="FLAC", subtype="PCM_16"
    ) as out:
        for k, (uid, text) in enumerate(utts):
            data, sr = sf.read(str(trans.parent / f"{uid}.flac"), dtype="int16")
            if sr != rate or data.ndim != 1:
                raise AudioError(f"{uid}.flac: expected mono {rate} Hz like the rest of its chapter")
            if k:
                out.write(gap)
                pos += len(gap)
            segments.append(
                {
                    "id": uid,
                    "start": round(pos / rate, 3),
                    "end": round((pos + len(data)) / rate, 3),
                    "text": text,
                }
            )
            out.write(data)
            pos += len(data)
    return pos / rate, rate, segments


def prepare_librispeech(root: str | Path, out_dir: str | Path, gap_s: float = 0.5) -> Path:
    """LibriSpeech split (speaker/chapter/*.trans.txt + *.flac) -> one long FLAC and line per chapter."""
    root, out_dir = Path(root), Path(out_dir)
    rows = []
    for trans in sorted(root.rglob("*.trans.txt")):
        cid = trans.name[: -len(".trans.txt")]
        audio = out_dir / "audio" / f"{cid}.flac"
        duration, rate, segments = join_chapter(trans, audio, gap_s)
        rows.append(
            {
                "id": cid,
                "path": os.path.relpath(audio, out_dir),
                "duration": round(duration, 3),
                "sample_rate": rate,
                "text": " ".join(s["text"] for s in segments),
                "segments": segments,
            }
        )
    return _write(out_dir, rows, f"*.trans.txt under {root}")


# ---- any folder of audio + same-named .txt ----


def prepare_folder(folder: str | Path, out_dir: str | Path) -> Path:
    """Every audio file under `folder` with a same-named .txt beside it -> one line (id = relative path)."""
    folder, out_dir = Path(folder), Path(out_dir)
    rows = []
    for audio in sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
        txt = audio.with_suffix(".txt")
        if txt.is_file():
            rid = audio.relative_to(folder).with_suffix("").as_posix().replace("/", "_")
            rows.append(_row(rid, audio, out_dir, " ".join(txt.read_text(encoding="utf-8").split())))
    return _write(out_dir, rows, f"audio files with a .txt transcript under {folder}")


# ---- Hugging Face datasets (optional dependency, needs the network or a local cache) ----


def _hf_audio(value) -> tuple[np.ndarray, int]:
    """(mono float32 samples, rate) from a datasets Audio value (dict, or a decoder object in datasets>=4)."""
    if isinstance(value, dict):
        data, rate = np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"])
    else:
        samples = value.get_all_samples()
        data, rate = np.asarray(samples.data, dtype=np.float32), int(samples.sample_rate)
        data = data.T  # decoder returns [channels, samples]
    return (data.mean(axis=1) if data.ndim == 2 else data), rate


def prepare_hf(
    dataset_id: str,
    out_dir: str | Path,
    split: str = "test",
    config: str | None = None,
    audio_column: str = "audio",
    text_column: str = "text",
    id_column: str | None = None,
    limit: int | None = None,
) -> Path:
    """A Hugging Face dataset split -> FLAC files + manifest (streams rows; `limit` keeps the first n)."""
    try:
        import datasets
    except ImportError as exc:
        raise MissingToolError(
            "preparing a Hugging Face dataset needs the `datasets` package: pip install datasets"
        ) from exc
    out_dir = Path(out_dir)
    try:
        rows_in = datasets.load_dataset(dataset_id, config, split=split, streaming=True)
        rows = []
        for k, row in enumerate(rows_in):
            if limit is not None and k >= limit:
                break
            rid = str(row[id_column]) if id_column else f"{k:06d}"
            data, rate = _hf_audio(row[audio_column])
            audio = out_dir / "audio" / f"{rid}.flac"
            audio.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(audio), data, rate, format="FLAC", subtype="PCM_16")
            rows.append(_row(rid, audio, out_dir, " ".join(str(row[text_column]).split())))
    except (ConnectionError, OSError, ValueError, KeyError) as exc:
        raise UniqueASRError(
            f"cannot load Hugging Face dataset {dataset_id!r} ({type(exc).__name__}: {exc}); "
            "it needs the network or a local datasets cache"
        ) from exc
    return _write(out_dir, rows, f"rows in {dataset_id}")
