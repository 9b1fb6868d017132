import errno
import json

import pytest

from unique_asr.errors import OutputError
from unique_asr.types import Segment, TranscriptionInfo
from unique_asr.writers import FORMATS, format_timestamp, parse_formats, write_outputs

SEGMENTS = [
    Segment(id=0, start=0.0, end=2.5, text=" Hello there."),
    Segment(id=1, start=3661.0426, end=3662.9994, text=" Second\n\nline, with a gap."),
]
INFO = TranscriptionInfo(language="en", language_probability=1.0, duration_s=3663.0, model="base",
                         attention={"mode": "unique", "budget": 384, "page_size": 16})


def test_format_timestamp_rounds_and_rolls_over():
    assert format_timestamp(0) == "00:00:00.000"
    assert format_timestamp(59.9996) == "00:01:00.000"
    assert format_timestamp(3661.0426, ",") == "01:01:01,043"
    assert format_timestamp(-0.2) == "00:00:00.000"


def test_all_formats_written(tmp_path):
    paths = write_outputs(SEGMENTS, INFO, tmp_path / "out", "talk", FORMATS)
    assert [p.suffix[1:] for p in paths] == list(FORMATS)
    out = {p.suffix[1:]: p.read_text(encoding="utf-8") for p in paths}
    assert out["txt"] == "Hello there.\nSecond line, with a gap.\n"
    assert out["srt"] == ("1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n"
                          "2\n01:01:01,043 --> 01:01:02,999\nSecond line, with a gap.\n")
    assert out["vtt"].startswith("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n")
    assert out["tsv"].splitlines() == ["start\tend\ttext", "0\t2500\tHello there.", "3661043\t3662999\tSecond line, with a gap."]
    payload = json.loads(out["json"])
    assert payload["text"] == "Hello there. Second line, with a gap."
    assert payload["info"]["attention"] == {"mode": "unique", "budget": 384, "page_size": 16}
    assert payload["segments"][1]["start"] == pytest.approx(3661.0426)
    assert not list((tmp_path / "out").glob(".*tmp"))


def test_parse_formats():
    assert parse_formats("all") == FORMATS
    assert parse_formats("srt, json") == ("srt", "json")
    with pytest.raises(ValueError, match="docx"):
        parse_formats("txt,docx")


def test_full_disk_gives_output_error_and_no_partial_file(tmp_path, monkeypatch):
    import os

    real_fsync = os.fsync

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OutputError, match="No space left on device"):
        write_outputs(SEGMENTS, INFO, tmp_path, "talk", ("txt",))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_dir_gives_output_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot write"):
        write_outputs(SEGMENTS, INFO, blocker / "sub", "talk", ("txt",))


def test_tsv_has_one_row_per_word_when_words_are_timed(tmp_path):
    from unique_asr.types import Word

    timed = [
        Segment(id=0, start=0.0, end=1.0, text=" Hello world.", words=(Word(0.0, 0.42, " Hello", 0.91234),
                                                                     Word(0.42, 0.98, " world.", 0.5))),
        Segment(id=1, start=1.5, end=2.0, text=" Untimed\ttail."),
        Segment(id=2, start=2.0, end=2.6, text=" Bye.", words=(Word(2.1, 2.6, " Bye.", 1.0),)),
    ]
    (path,) = write_outputs(timed, INFO, tmp_path, "talk", ("tsv",))
    assert path.read_text(encoding="utf-8").splitlines() == [
        "start\tend\tword\tprobability\tsegment",
        "0\t420\tHello\t0.912\t0",
        "420\t980\tworld.\t0.500\t0",
        "1500\t2000\tUntimed tail.\t\t1",
        "2100\t2600\tBye.\t1.000\t2",
    ]
