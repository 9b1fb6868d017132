"""Subtitle cue text: what SRT and WebVTT allow inside a cue.

A cue's text must never contain the timing arrow `-->` (players take the line for a new timing line) nor a
blank line (it ends the cue). WebVTT cue text is markup: `&`, `<` and `>` are written as character
references, so `-->` becomes `--&gt;` and reads back as the same text. SRT has no escape syntax (players
differ on HTML entities), so there `-->` is written `->`, as openai-whisper does.
"""

from __future__ import annotations


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
