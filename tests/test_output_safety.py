"""Whole output sets and full disks (issues 18 and 13): a failed format leaves the previous set whole; a file-size
limit while writing the journal or the outputs is a one-line error naming the file, what was written stays
valid, and --resume continues once there is space; files get the user's normal mode."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch

from speech_data import AUSTEN, joined
from unique_asr.api import load_model
from unique_asr.cli import build_parser, main, options_from_args
from unique_asr.errors import OutputError
from unique_asr.journal import Journal
from unique_asr.models.checkpoint import save_converted
from unique_asr.models.whisper import WhisperConfig
from unique_asr.runner import journal_path
from unique_asr.types import Segment, TranscriptionInfo
from unique_asr.writers import FORMATS, RENDERERS, write_outputs

RATE = 16000
FLAGS = ["--model", "tiny.en", "--max_window_s", "6", "--output_format", "txt,json", "--quiet"]


@contextlib.contextmanager
def file_size_limit(limit: int):
    """RLIMIT_FSIZE on this process (SIGXFSZ ignored, so writes fail with EFBIG instead of killing it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def transcript(text: str) -> tuple[list[Segment], TranscriptionInfo]:
    return [Segment(0, 0.0, 2.5, text, (50, 51, 52))], TranscriptionInfo("en", 1.0, 2.5, "tiny.en")


def test_a_failed_format_leaves_the_previous_set_whole(tmp_path):
    write_outputs(*transcript(" the old transcript"), tmp_path, "talk", FORMATS)
    old = {p: p.read_bytes() for p in tmp_path.iterdir()}
    new = transcript(" a new transcript that is longer " * 20)
    sizes = {fmt: len(RENDERERS[fmt](*new).encode()) for fmt in FORMATS}
    assert sizes["json"] > max(s for f, s in sizes.items() if f != "json")
    limit = (sizes["json"] + max(s for f, s in sizes.items() if f != "json")) // 2  # only json cannot be written
    with file_size_limit(limit), pytest.raises(OutputError) as caught:
        write_outputs(*new, tmp_path, "talk", FORMATS)
    message = str(caught.value)
    assert str(tmp_path / "talk.json") in message and "\n" not in message
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == old  # old set whole, no temp file left
    assert write_outputs(*new, tmp_path, "talk", FORMATS)  # space is back
    assert "longer" in (tmp_path / "talk.srt").read_text() and "longer" in (tmp_path / "talk.json").read_text()


def test_outputs_and_cached_weights_get_the_users_file_mode(tmp_path):
    old = os.umask(0o022)
    try:
        paths = write_outputs(*transcript(" hi"), tmp_path / "out", "talk", FORMATS)
        save_converted(str(tmp_path / "cache"), WhisperConfig(), {"w": torch.zeros(2)}, {})
    finally:
        os.umask(old)
    cached = sorted((tmp_path / "cache").iterdir())
    assert [p.name for p in cached] == ["config.json", "model.safetensors"]
    assert {oct(p.stat().st_mode & 0o777) for p in [*paths, *cached]} == {"0o644"}


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """Two real utterances (11 s: two windows of <= 6 s)."""
    folder = tmp_path_factory.mktemp("rec")
    sf.write(folder / "f.flac", joined(AUSTEN[:2], gap_s=1.0)[0], RATE)
    return folder / "f.flac"


def reference_run(source: Path, flags: list[str], folder: Path) -> tuple[list[int], dict[str, str]]:
    """In-process run with the CLI's options: the journal's byte size after its header and after each window
    (the run is deterministic), and the rendered outputs."""
    options = options_from_args(build_parser().parse_args([str(source), *flags]))
    path = folder / "j.jsonl"
    segments, info = load_model("tiny.en").transcribe(str(source), options, journal=Journal(path, resume=False))
    segments = list(segments)
    lines = path.read_bytes().splitlines(keepends=True)
    sizes = [sum(len(line) for line in lines[: n + 1]) for n in range(len(lines))]
    return sizes, {fmt: RENDERERS[fmt](segments, info) for fmt in ("txt", "json")}


def run_limited(source: Path, out: Path, flags: list[str], limit: int) -> subprocess.CompletedProcess:
    def limit_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # the CLI must cope with the default action itself
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    load_model("tiny.en")  # the converted weights are cached before the limit applies
    cmd = [sys.executable, "-B", "-m", "unique_asr.cli", str(source), "--output_dir", str(out), *flags]
    return subprocess.run(cmd, capture_output=True, text=True, preexec_fn=limit_files, timeout=600)


def one_error_line(err: str) -> str:
    assert "Traceback" not in err and "OSError" not in err, err
    [line] = [ln for ln in err.splitlines() if ln.startswith("unique-transcribe: error:")]
    return line


def test_file_size_limit_on_the_journal_then_resume(recording, tmp_path):
    flags = ["--strategy", "sequential", *FLAGS]
    sizes, ref = reference_run(recording, flags, tmp_path)
    assert len(sizes) >= 3  # header and two windows
    out = tmp_path / "out"
    done = run_limited(recording, out, flags, (sizes[1] + sizes[2]) // 2)  # the second window does not fit
    line = one_error_line(done.stderr)
    journal = journal_path(out, recording.stem)
    assert done.returncode == 1 and str(journal) in line and "--resume" in line
    written = journal.read_bytes()
    assert written.endswith(b"\n") and len(Journal(journal).records) == 1  # valid: the torn line was cut off
    assert journal.read_bytes() == written
    assert sorted(p.name for p in out.iterdir()) == [journal.name]  # no outputs, no temp files
    assert main([str(recording), "--output_dir", str(out), "--resume", *flags]) == 0
    assert (out / "f.txt").read_text() == ref["txt"] and not journal.exists()


def test_file_size_limit_on_the_outputs_then_resume(recording, tmp_path):
    flags = ["--strategy", "batched", *FLAGS]
    sizes, ref = reference_run(recording, flags, tmp_path)
    json_size, others = len(ref["json"].encode()), max(sizes[-1], len(ref["txt"].encode()))
    assert json_size > others + 200
    out = tmp_path / "out"
    out.mkdir()
    (out / "f.txt").write_text("old\n")
    (out / "f.json").write_text("{}\n")
    done = run_limited(recording, out, flags, (json_size + others) // 2)  # all fits but the json
    line = one_error_line(done.stderr)
    assert done.returncode == 1 and str(out / "f.json") in line
    assert (out / "f.txt").read_text() == "old\n" and (out / "f.json").read_text() == "{}\n"  # the old set
    journal = journal_path(out, recording.stem)
    assert Journal(journal).records  # every window kept: resume only writes the outputs
    assert main([str(recording), "--output_dir", str(out), "--resume", *flags]) == 0
    assert (out / "f.txt").read_text() == ref["txt"] and not journal.exists()
    assert sorted(p.name for p in out.iterdir()) == ["f.json", "f.txt"]
