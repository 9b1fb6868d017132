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


def _timed():
    from unique_asr.types import Word

    words = [Word(0.0, 0.4, " Hello", 0.9), Word(0.4, 0.8, " world,", 0.9), Word(0.9, 1.3, " this", 0.9),
             Word(1.3, 1.8, " is", 0.9), Word(1.8, 2.4, " a --> test.", 0.9), Word(6.0, 6.5, " Later.", 0.9)]
    return [Segment(0, 0.0, 2.4, " Hello world, this is a --> test.", words=tuple(words[:5])),
            Segment(1, 6.0, 6.5, " Later.", words=tuple(words[5:]))]


def test_line_width_and_count_from_words():
    from unique_asr.config import SubtitleOptions

    text = render_srt(_timed(), _info(), SubtitleOptions(max_line_width=12, max_line_count=2))
    assert text.split("\n\n") == [
        "1\n00:00:00,000 --> 00:00:01,800\nHello world,\nthis is",
        "2\n00:00:01,800 --> 00:00:02,400\na -> test.",
        "3\n00:00:06,000 --> 00:00:06,500\nLater.\n",
    ]
    for cue in text.split("\n\n"):
        assert all(len(line) <= 12 for line in cue.splitlines()[2:])


def test_highlight_words_one_cue_per_word_and_gaps():
    from unique_asr.config import SubtitleOptions

    cues = render_vtt(_timed(), _info(), SubtitleOptions(highlight_words=True)).split("\n\n")[1:]
    assert cues[0] == "00:00:00.000 --> 00:00:00.400\n<u>Hello</u> world, this is a --&gt; test."
    assert cues[2] == "00:00:00.800 --> 00:00:00.900\nHello world, this is a --&gt; test."  # the gap
    assert cues[-1] == "00:00:06.000 --> 00:00:06.500\n<u>Later.</u>\n"
    assert len(cues) == 7


def test_layout_without_words_keeps_segment_cues():
    from unique_asr.config import SubtitleOptions

    plain = [Segment(0, 0.0, 1.0, " no words here")]
    assert render_srt(plain, _info(), SubtitleOptions(max_line_width=5)) == render_srt(plain, _info())
