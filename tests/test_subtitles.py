"""Cue text never holds a timing arrow or a blank line; WebVTT text is escaped markup."""

from unique_asr.subtitles import srt_text, vtt_text
from unique_asr.types import Segment, TranscriptionInfo
from unique_asr.writers import render_srt, render_vtt


def test_arrow_and_markup_in_text():
    assert srt_text("a --> b ---> c\n\nd") == "a -> b -> c d"
    assert "-->" not in srt_text("x ----> y")
    assert vtt_text("a --> b & <i>") == "a --&gt; b &amp; &lt;i&gt;"


def test_rendered_cues_have_one_arrow_line_each():
    segments = [Segment(0, 0.0, 1.0, " he said --> go"), Segment(1, 1.0, 2.5, "x\n\ny <b>")]
    for render in (render_srt, render_vtt):
        text = render(segments, _info())
        arrow_lines = [line for line in text.splitlines() if "-->" in line]
        assert len(arrow_lines) == 2 and all(re_timing(line) for line in arrow_lines), text


def re_timing(line: str) -> bool:
    import re

    return re.fullmatch(r"[\d:.,]+ --> [\d:.,]+", line) is not None


def _info():
    return TranscriptionInfo(language="en", language_probability=1.0, duration_s=2.5, model="tiny.en")
