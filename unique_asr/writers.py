"""Transcript writers: txt, srt, vtt, tsv, json.

A file's formats are written as one set: every format goes to a temporary file beside its target first, and
only when all of them are written are they renamed over the old ones, so a full disk (or a file-size limit)
leaves the previous set whole instead of a mix of new and old formats (issue 18). Files get the user's normal
mode (0666 minus the umask), not mkstemp's 0600.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from unique_asr.errors import OutputError
from unique_asr.fileio import create_temp
from unique_asr.subtitles import cue_text, srt_text, vtt_text, word_cues
from unique_asr.types import Segment, TranscriptionInfo

FORMATS = ("txt", "srt", "vtt", "tsv", "json")


def format_timestamp(seconds: float, decimal: str = ".", always_hours: bool = True) -> str:
    """12.3456 -> '00:00:12.346' (millisecond rounding, no negative times)."""
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    head = f"{hours:02d}:" if always_hours or hours else ""
    return f"{head}{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def _clean(text: str) -> str:
    # Subtitle cues end at a blank line, so a transcript must never contain one.
    return " ".join(text.split())


def render_txt(segments: Sequence[Segment], info: TranscriptionInfo) -> str:
    return "".join(_clean(s.text) + "\n" for s in segments)


def _cues(segments: Sequence[Segment], layout, escape) -> list[tuple[float, float, str]]:
    """(start, end, text) per cue: one per segment, or laid out from the timed words (SubtitleOptions)."""
    if layout is not None and layout.needs_words and any(s.words for s in segments):
        cues = word_cues(segments, layout.max_line_width, layout.max_line_count, layout.highlight_words)
        return [(c.start, c.end, cue_text(c, escape)) for c in cues]
    return [(s.start, s.end, escape(s.text)) for s in segments]


def render_srt(segments: Sequence[Segment], info: TranscriptionInfo, layout=None) -> str:
    cues = [
        f"{i}\n{format_timestamp(start, ',')} --> {format_timestamp(end, ',')}\n{text}\n"
        for i, (start, end, text) in enumerate(_cues(segments, layout, srt_text), start=1)
    ]
    return "\n".join(cues)


def render_vtt(segments: Sequence[Segment], info: TranscriptionInfo, layout=None) -> str:
    cues = [f"{format_timestamp(start)} --> {format_timestamp(end)}\n{text}\n"
            for start, end, text in _cues(segments, layout, vtt_text)]
    return "WEBVTT\n\n" + "\n".join(cues)


def render_tsv(segments: Sequence[Segment], info: TranscriptionInfo) -> str:
    """One row per segment (start and end in ms, text), as openai-whisper writes it; with word timestamps one
    row per word instead (start, end, word, probability, the id of its segment): the table that tools aligning
    words to speakers read. A segment without timed words is then one row with its text and no probability."""
    if any(s.words for s in segments):
        rows = []
        for s in segments:  # a segment without timed words (none came out of its alignment) keeps its text
            timed = [(w.start, w.end, w.word, f"{w.probability:.3f}") for w in s.words] or [(s.start, s.end, s.text, "")]
            rows += [f"{round(a * 1000)}\t{round(b * 1000)}\t{_clean(text)}\t{p}\t{s.id}\n" for a, b, text, p in timed]
        return "start\tend\tword\tprobability\tsegment\n" + "".join(rows)
    rows = [f"{round(s.start * 1000)}\t{round(s.end * 1000)}\t{_clean(s.text)}\n" for s in segments]
    return "start\tend\ttext\n" + "".join(rows)


def render_json(segments: Sequence[Segment], info: TranscriptionInfo) -> str:
    payload = {
        "text": " ".join(_clean(s.text) for s in segments).strip(),
        "language": info.language,
        "segments": [s.to_dict() for s in segments],
        "info": info.to_dict(),
    }
    return json.dumps(payload, ensure_ascii=False, indent=2) + "\n"


RENDERERS: dict[str, Callable[[Sequence[Segment], TranscriptionInfo], str]] = {
    "txt": render_txt,
    "srt": render_srt,
    "vtt": render_vtt,
    "tsv": render_tsv,
    "json": render_json,
}


def parse_formats(spec: str) -> tuple[str, ...]:
    """'srt,json' -> ('srt', 'json'); 'all' -> every format. Raises ValueError on an unknown name."""
    names = FORMATS if spec.strip() == "all" else tuple(n.strip() for n in spec.split(",") if n.strip())
    unknown = [n for n in names if n not in RENDERERS]
    if unknown or not names:
        raise ValueError(f"unknown output format {', '.join(unknown) or spec!r}; choose from {', '.join(FORMATS)} or all")
    return names


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temp file in the same folder, so a full disk never leaves half a file."""
    write_set({Path(path): text})


def write_set(files: Mapping[Path, str]) -> None:
    """Write every text to a temp file beside its path, then rename them all over their paths; nothing is
    renamed unless every temp file was written and fsync'd. OutputError (one line, naming the file) when the
    disk refuses; the temp files are removed and the old files stay as they were."""
    temps: dict[Path, Path] = {}
    try:
        for path, text in files.items():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, temps[path] = create_temp(path.parent, path.name)
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as exc:
                raise OutputError(f"{path}: cannot write ({exc.strerror or exc}); the previous outputs, if any, "
                                  "are unchanged") from None
        for path, tmp in temps.items():  # renames take no space: they do not fail on a full disk
            try:
                os.replace(tmp, path)
            except OSError as exc:
                raise OutputError(f"{path}: cannot replace it ({exc.strerror or exc})") from None
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)


def write_outputs(
    segments: Sequence[Segment], info: TranscriptionInfo, output_dir: Path, stem: str, formats: Sequence[str],
    subtitles=None,
) -> list[Path]:
    """Write output_dir/stem.<fmt> for every format, as one set (see the module doc); OutputError when the
    disk refuses. subtitles: a SubtitleOptions laying out SRT/VTT cues from timed words."""

    def render(fmt: str) -> str:
        if fmt in ("srt", "vtt"):
            return RENDERERS[fmt](segments, info, subtitles)
        return RENDERERS[fmt](segments, info)

    files = {Path(output_dir) / f"{stem}.{fmt}": render(fmt) for fmt in formats}
    write_set(files)
    return list(files)
