"""A self-contained HTML report of result manifests: a colour-coded word diff per file (substitutions,
deletions, insertions against the reference, after the same normaliser as the WER) and a transcript viewer that
plays the recording and highlights the segment, or the word when the transcript has word times, being spoken.

One file, no external resources: styles and script are inline; the audio is referenced by a path relative to
the report (or embedded as a data URI with `embed_audio_bytes`), so the report opens from disk in any browser."""

from __future__ import annotations

import base64
import html
import mimetypes
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from unique_asr.errors import OutputError
from unique_asr.eval.align import align
from unique_asr.eval.manifest import read_jsonl
from unique_asr.eval.normalise import DEFAULT_NORMALISER, get_normaliser

# (kind, reference word or None, hypothesis word or None); kind: ok, sub, del, ins
DiffToken = tuple[str, "str | None", "str | None"]


def word_diff(ref: Sequence[str], hyp: Sequence[str]) -> list[DiffToken]:
    """The alignment of `hyp` to `ref` as a token stream in reading order (the WER's own alignment)."""
    out: list[DiffToken] = []
    i = j = 0
    for tag, r1, r2, h1, h2 in align(ref, hyp).edits + [("end", len(ref), len(ref), len(hyp), len(hyp))]:
        out += [("ok", ref[i + k], hyp[j + k]) for k in range(r1 - i)]  # matched run before this edit
        if tag == "replace":
            pairs = min(r2 - r1, h2 - h1)
            out += [("sub", ref[r1 + k], hyp[h1 + k]) for k in range(pairs)]
            out += [("del", w, None) for w in ref[r1 + pairs : r2]]
            out += [("ins", None, w) for w in hyp[h1 + pairs : h2]]
        elif tag == "delete":
            out += [("del", w, None) for w in ref[r1:r2]]
        elif tag == "insert":
            out += [("ins", None, w) for w in hyp[h1:h2]]
        i, j = r2, h2
    return out


@dataclass(frozen=True)
class FileView:
    id: str
    wer: float
    counts: dict
    diff: list[DiffToken]
    segments: list[dict]
    audio_src: str | None


def _audio_src(audio: str | None, out_dir: Path, embed_audio_bytes: int) -> str | None:
    if not audio or not os.path.isfile(audio):
        return None
    if os.path.getsize(audio) <= embed_audio_bytes:
        mime = mimetypes.guess_type(audio)[0] or "audio/wav"
        with open(audio, "rb") as f:
            return f"data:{mime};base64,{base64.b64encode(f.read()).decode()}"
    return os.path.relpath(os.path.abspath(audio), os.path.abspath(out_dir))


def file_view(record: dict, normaliser: str, out_dir: Path, embed_audio_bytes: int = 0) -> FileView:
    norm = get_normaliser(normaliser)
    ref, hyp = norm(record["reference"]).split(), norm(record["hypothesis"]).split()
    diff = word_diff(ref, hyp)
    counts = {kind: sum(1 for k, _, _ in diff if k == kind) for kind in ("sub", "del", "ins")}
    wer = (counts["sub"] + counts["del"] + counts["ins"]) / len(ref) if ref else float(bool(hyp))
    return FileView(str(record["id"]), wer, counts, diff, list(record.get("segments") or ()),
                    _audio_src(record.get("audio"), out_dir, embed_audio_bytes))


STYLE = """
body{font:15px/1.5 system-ui,sans-serif;margin:2em auto;max-width:70em;color:#222}
h1{font-size:1.5em} h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
.legend span,.diff span{padding:0 2px;border-radius:3px}
.sub{background:#fde2b5} .sub s{color:#a33} .sub b{color:#075} .del{background:#f8c9c9;text-decoration:line-through}
.ins{background:#c9e4f8;text-decoration:underline} .stats{color:#555} table{border-collapse:collapse}
td,th{padding:2px 10px;border-bottom:1px solid #eee;text-align:right} td:first-child,th:first-child{text-align:left}
.viewer audio{width:100%} .seg{margin:.2em 0} .t{color:#888;font-size:.85em;margin-right:.5em}
[data-s]{cursor:pointer;border-radius:3px} .now{background:#ffe066}
"""
SCRIPT = """
document.querySelectorAll('.viewer').forEach(function (v) {
  var a = v.querySelector('audio'); if (!a) return;
  var spans = Array.prototype.slice.call(v.querySelectorAll('[data-s]'));
  a.addEventListener('timeupdate', function () {
    var t = a.currentTime;
    spans.forEach(function (s) { s.classList.toggle('now', t >= +s.dataset.s && t < +s.dataset.e); });
  });
  spans.forEach(function (s) { s.addEventListener('click', function () { a.currentTime = +s.dataset.s; a.play(); }); });
});
"""


def _diff_html(diff: Iterable[DiffToken]) -> str:
    parts = []
    for kind, r, h in diff:
        if kind == "ok":
            parts.append(html.escape(r))
        elif kind == "sub":
            parts.append(f'<span class="sub" title="substitution"><s>{html.escape(r)}</s>&rarr;<b>{html.escape(h)}</b></span>')
        elif kind == "del":
            parts.append(f'<span class="del" title="deletion">{html.escape(r)}</span>')
        else:
            parts.append(f'<span class="ins" title="insertion">{html.escape(h)}</span>')
    return " ".join(parts)


def _timed(start: float, end: float, text: str, cls: str = "") -> str:
    return f'<span{f" class={cls!r}" if cls else ""} data-s="{start:.3f}" data-e="{end:.3f}">{html.escape(text)}</span>'


def _segments_html(segments: Sequence[dict]) -> str:
    rows = []
    for seg in segments:
        words = seg.get("words") or ()
        body = (" ".join(_timed(w["start"], w["end"], w["word"].strip()) for w in words) if words
                else _timed(seg["start"], seg["end"], seg["text"].strip()))
        rows.append(f'<div class="seg"><span class="t">{seg["start"]:.2f}&ndash;{seg["end"]:.2f}</span>{body}</div>')
    return "\n".join(rows)


def render(views: Sequence[FileView], title: str, normaliser: str) -> str:
    total_ref = sum(sum(1 for k, r, _ in v.diff if r is not None) for v in views)
    errors = sum(sum(v.counts.values()) for v in views)
    summary = "".join(
        f"<tr><td><a href='#f{i}'>{html.escape(v.id)}</a></td><td>{100 * v.wer:.2f}</td><td>{v.counts['sub']}</td>"
        f"<td>{v.counts['del']}</td><td>{v.counts['ins']}</td></tr>" for i, v in enumerate(views))
    body = []
    for i, v in enumerate(views):
        audio = f'<audio controls preload="metadata" src="{html.escape(v.audio_src)}"></audio>' if v.audio_src else ""
        body.append(
            f'<h2 id="f{i}">{html.escape(v.id)}</h2>'
            f'<p class="stats">WER {100 * v.wer:.2f} % &middot; {v.counts["sub"]} substitutions, {v.counts["del"]} '
            f'deletions, {v.counts["ins"]} insertions</p>'
            f'<p class="diff">{_diff_html(v.diff)}</p>'
            f'<div class="viewer">{audio}{_segments_html(v.segments)}</div>')
    wer = 100 * errors / total_ref if total_ref else 0.0
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{len(views)} files, WER {wer:.2f} % over {total_ref} reference words (normaliser: "
        f"{html.escape(normaliser)}). <span class='legend'>Legend: <span class='sub'><s>reference</s>&rarr;"
        "<b>hypothesis</b></span> substitution, <span class='del'>word</span> deletion, <span class='ins'>word</span> "
        "insertion. Play a file and its transcript follows the audio; click a segment or word to jump there.</span></p>"
        f"<table><tr><th>file</th><th>WER %</th><th>S</th><th>D</th><th>I</th></tr>{summary}</table>"
        f"{''.join(body)}<script>{SCRIPT}</script></body></html>")


def write_html_report(manifests: Sequence[str | Path], out: str | Path, normaliser: str | None = None,
                      embed_audio_bytes: int = 0) -> Path:
    """Write one HTML report for the result manifests' files; `normaliser` defaults to each manifest's own."""
    out = Path(out)
    views, used = [], set()
    for manifest in manifests:
        for record in read_jsonl(manifest):
            name = normaliser or record.get("normaliser") or DEFAULT_NORMALISER
            used.add(name)
            views.append(file_view(record, name, out.parent, embed_audio_bytes))
    text = render(views, f"Transcripts against references ({len(views)} files)", ", ".join(sorted(used)))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as exc:
        raise OutputError(f"{out}: cannot write ({exc.strerror})") from exc
    return out
