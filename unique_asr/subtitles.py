"""Subtitle cue text: what SRT and WebVTT allow inside a cue.

A cue's text must never contain the timing arrow `-->` (players take the line for a new timing line) nor a
blank line (it ends the cue). WebVTT cue text is markup: `&`, `<` and `>` are written as character
references, so `-->` becomes `--&gt;` and reads back as the same text. SRT has no escape syntax (players
differ on HTML entities), so there `-->` is written `->`, as openai-whisper does.
"""

from __future__ import annotations

from dataclasses import dataclass


def clean(text: str) -> str:
    """Runs of whitespace (newlines included) -> one space: a transcript line can never end a cue."""
    return " ".join(text.split())


def srt_text(text: str) -> str:
    out = clean(text)
    while "-->" in out:
        out = out.replace("-->", "->")
    return out


def vtt_text(text: str) -> str:
    return clean(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ------------------------------------------------------------------------------------ cues from timed words

@dataclass(frozen=True)
class Cue:
    """One subtitle cue: words (each with its leading space; a leading newline starts a new line) and the
    index of the word to highlight (None: no highlight)."""

    start: float
    end: float
    words: tuple[str, ...]
    highlight: int | None = None


def word_cues(segments, max_line_width: int | None, max_line_count: int | None, highlight: bool) -> list[Cue]:
    """openai-whisper's subtitle layout: words fill lines of at most max_line_width characters; a cue holds at
    most max_line_count lines and ends at a pause longer than 3 s (with both limits; otherwise a cue is a
    segment); highlight gives one cue per word with that word underlined, and the gaps between words."""
    preserve_segments = max_line_count is None or max_line_width is None
    width = max_line_width if max_line_width is not None else 1000
    groups: list[list[tuple[float, float, str]]] = []
    current: list[tuple[float, float, str]] = []
    line_len, line_count = 0, 1
    last = next((s.words[0].start for s in segments if s.words), 0.0)
    for segment in segments:
        for i, w in enumerate(segment.words):
            word = w.word
            long_pause = not preserve_segments and w.start - last > 3.0
            has_room = line_len + len(word) <= width
            seg_break = i == 0 and bool(current) and preserve_segments
            if line_len > 0 and has_room and not long_pause and not seg_break:
                line_len += len(word)
            else:
                word = word.strip()
                if current and ((max_line_count is not None and (long_pause or line_count >= max_line_count))
                                or seg_break):
                    groups.append(current)
                    current, line_count = [], 1
                elif line_len > 0:
                    line_count += 1
                    word = "\n" + word
                line_len = len(word.strip())
            current.append((w.start, w.end, word))
            last = w.start
    if current:
        groups.append(current)
    cues: list[Cue] = []
    for group in groups:
        words = tuple(w for _, _, w in group)
        if not highlight:
            cues.append(Cue(group[0][0], group[-1][1], words))
            continue
        at = group[0][0]
        for i, (start, end, _) in enumerate(group):
            if start > at:
                cues.append(Cue(at, start, words))
            cues.append(Cue(start, end, words, i))
            at = end
    return cues


def cue_text(cue: Cue, escape) -> str:
    """The cue's lines: each word escaped for the format, the highlighted one wrapped in <u></u>."""
    out = []
    for i, word in enumerate(cue.words):
        newline = word.startswith("\n")
        body = word.lstrip("\n")
        space = body[: len(body) - len(body.lstrip())]
        text = escape(body.strip())
        if i == cue.highlight and text:
            text = f"<u>{text}</u>"
        out.append(("\n" if newline else "") + space + text)
    return "\n".join(line.strip() for line in "".join(out).split("\n"))
