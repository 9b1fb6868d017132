"""unique-transcribe end to end on real tiny.en weights: outputs, bad-input isolation, exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from unique_asr.cli import main

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@pytest.fixture
def bad_inputs(tmp_path):
    """One file per bad-input case of the README table."""
    d = tmp_path / "in"
    d.mkdir()
    (d / "empty.wav").write_bytes(b"")
    data = (SAMPLES / "hello.flac").read_bytes()
    (d / "truncated.flac").write_bytes(data[: len(data) // 3])
    (d / "notes.wav").write_text("this is not audio\n" * 50)
    sf.write(d / "zero_length.wav", np.zeros(0, dtype=np.float32), 16000)
    nan = np.zeros(16000, dtype=np.float32)
    nan[100] = np.nan
    sf.write(d / "nan.wav", nan, 16000, subtype="FLOAT")
    (d / "random.xyz").write_bytes(np.random.default_rng().integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return d


def test_transcribes_sample_to_all_formats(tmp_path, capsys):
    out = tmp_path / "out"
    code = main([str(SAMPLES / "hello.flac"), "--model", "tiny.en", "--output_dir", str(out), "--quiet"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["hello.json", "hello.srt", "hello.tsv", "hello.txt", "hello.vtt"]
    payload = json.loads((out / "hello.json").read_text())
    assert "short test" in payload["text"].lower()
    assert payload["segments"] and all(s["end"] > s["start"] >= 0 for s in payload["segments"])
    assert payload["info"]["attention"]["mode"] == "dense"


def test_bad_inputs_fail_alone_with_one_line_each(tmp_path, bad_inputs, capsys):
    good = tmp_path / "good.flac"
    shutil.copy(SAMPLES / "hello.flac", good)
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(16000 * 3, dtype=np.float32), 16000)
    out = tmp_path / "out"
    bad = sorted(str(p) for p in bad_inputs.iterdir())
    code = main([*bad, str(good), str(silence), str(tmp_path / "missing.wav"), "--model", "tiny.en",
                 "--output_dir", str(out), "--output_format", "txt", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err
    error_lines = [line for line in err.splitlines() if line.startswith("unique-transcribe: error:")]
    assert len(error_lines) == len(bad) + 1, err
    for path in [*bad, str(tmp_path / "missing.wav")]:
        assert sum(path in line for line in error_lines) == 1, (path, err)
    assert "short test" in (out / "good.txt").read_text().lower()
    assert (out / "silence.txt").read_text() == ""
    assert not list(out.glob(".*journal*"))


def test_unwritable_output_dir_is_one_line_exit_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main([str(SAMPLES / "hello.flac"), "--model", "tiny.en", "--output_dir", str(blocker / "sub")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and str(blocker / "sub") in err


def test_bad_option_is_one_line_exit_2(capsys):
    assert main([str(SAMPLES / "hello.flac"), "--output_format", "docx"]) == 2
    assert main([str(SAMPLES / "hello.flac"), "--beam_size", "0"]) == 2
    err = capsys.readouterr().err
    assert "docx" in err and "beam_size" in err and "Traceback" not in err


def test_unknown_model_is_one_line(tmp_path, capsys):
    code = main([str(SAMPLES / "hello.flac"), "--model", str(tmp_path / "no-such-model"), "--output_dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "no-such-model" in err and "Traceback" not in err  # a bad option value
