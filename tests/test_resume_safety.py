"""Nothing lost, nothing doubled (issue 18): one writer per output (an OS lock), journals that refuse doubled or
out-of-order windows, a rerun without --resume that keeps the journal, and two real runs killed with -9 that
end in a refusal or the exact single-run transcript."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf

from speech_data import AUSTEN, joined
from unique_asr.cli import main
from unique_asr.errors import OutputError
from unique_asr.journal import Journal, JournalError, JournalExists, WindowRecord
from unique_asr.lock import OutputLock
from unique_asr.runner import journal_path, lock_path
from unique_asr.types import Segment

RATE = 16000
FLAGS = ["--model", "tiny.en", "--strategy", "sequential", "--max_window_s", "6", "--output_format", "txt,json",
         "--quiet"]


def record(index: int, start_s: float, end_s: float) -> WindowRecord:
    seg = Segment(index, start_s, end_s, f" window {index}", (1, 2))
    return WindowRecord(index, round(start_s * RATE), round(end_s * RATE), end_s - start_s, (seg,), (1, 2))


def write_journal(path: Path, records: list[WindowRecord]) -> None:
    journal = Journal(path, resume=True)
    journal.start("tiny.en", {"strategy": "sequential"}, 30.0, "en", 1.0)
    for r in records:
        journal._write(r.to_json())  # as a second writer would: no order check on the way in


@pytest.mark.parametrize(
    "spans, why",
    [
        ([(0, 0, 5), (0, 0, 5), (1, 6, 9)], "window 0 twice"),  # the header, win0, win0, win1
        ([(0, 0, 5), (2, 10, 12)], "window 2 out of order"),
        ([(0, 0, 5), (1, 4, 9)], "window 1 out of order"),  # overlapping spans
    ],
)
def test_replay_refuses_doubled_or_out_of_order_windows(tmp_path, spans, why):
    path = tmp_path / "j.jsonl"
    write_journal(path, [record(*s) for s in spans])
    before = path.read_bytes()
    with pytest.raises(JournalError, match=why) as caught:
        Journal(path, resume=True)
    assert "\n" not in str(caught.value) and "--overwrite" in str(caught.value)
    assert path.read_bytes() == before  # refused, not repaired behind the user's back
    assert Journal(path, resume=False, overwrite=True).records == [] and not path.exists()


def test_a_bad_line_before_the_last_is_refused_a_torn_last_line_is_dropped(tmp_path):
    path = tmp_path / "j.jsonl"
    write_journal(path, [record(0, 0, 5), record(1, 6, 9)])
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + '{"index": 1, "sta\n' + lines[2])
    with pytest.raises(JournalError, match="line 2"):
        Journal(path, resume=True)
    path.write_text("".join(lines) + '{"index": 2, "sta')
    assert [r.index for r in Journal(path, resume=True).records] == [0, 1]
    assert path.read_text() == "".join(lines)


def test_a_fresh_start_keeps_a_journal_with_finished_windows(tmp_path):
    path = tmp_path / "j.jsonl"
    write_journal(path, [record(0, 0, 5)])
    before = path.read_bytes()
    with pytest.raises(JournalExists, match="1 finished window .*--resume.*--overwrite"):
        Journal(path, resume=False)
    assert path.read_bytes() == before
    write_journal(tmp_path / "empty.jsonl", [])  # a header and no finished window: nothing to lose
    assert Journal(tmp_path / "empty.jsonl", resume=False).header is None


def _hold_lock(path: Path) -> subprocess.Popen:
    code = ("import sys, time; from unique_asr.lock import OutputLock; "
            f"OutputLock({str(path)!r}, 'x').acquire(); print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_lock_names_the_holder_and_goes_stale_when_it_dies(tmp_path):
    path = tmp_path / ".a.lock"
    holder = _hold_lock(path)
    try:
        with pytest.raises(OutputError, match=f"pid {holder.pid}") as caught:
            OutputLock(path, str(tmp_path / "a")).acquire()
        assert "\n" not in str(caught.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert path.exists()  # left behind by kill -9, and no obstacle:
    with OutputLock(path, "a"):
        assert path.read_text().strip() == str(os.getpid())
    assert not path.exists()


def test_cli_refuses_a_file_another_run_holds_and_finishes_the_others(tmp_path, capsys):
    audio, _ = joined(AUSTEN[1:2])
    out = tmp_path / "out"
    for name in ("a", "b"):
        sf.write(tmp_path / f"{name}.flac", audio, RATE)
    holder = _hold_lock(lock_path(out, "a"))
    try:
        code = main([str(tmp_path / "a.flac"), str(tmp_path / "b.flac"), "--output_dir", str(out), *FLAGS])
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    [line] = [ln for ln in err.splitlines() if "error:" in ln]
    assert f"pid {holder.pid}" in line and str(out / "a") in line
    assert not (out / "a.txt").exists() and "young man" in (out / "b.txt").read_text()


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """Three real utterances with pauses (17 s, three or four windows of <= 6 s) and their single-run
    transcript."""
    folder = tmp_path_factory.mktemp("rec")
    audio, _ = joined(AUSTEN[:3], gap_s=1.0)
    sf.write(folder / "f.flac", audio, RATE)
    assert main([str(folder / "f.flac"), "--output_dir", str(folder / "ref"), *FLAGS]) == 0
    return folder / "f.flac", folder / "ref"


def _interrupted_journal(source: Path, out: Path) -> Path:
    """A journal of an interrupted CLI run: the same options, stopped after the first window."""
    from unique_asr.api import load_model
    from unique_asr.cli import build_parser, options_from_args

    options = options_from_args(build_parser().parse_args([str(source), *FLAGS]))
    path = journal_path(out, source.stem)
    segments, _ = load_model("tiny.en").transcribe(str(source), options, journal=Journal(path, resume=False))
    next(segments)
    segments.close()
    assert len(Journal(path).records) == 1
    return path


def test_rerun_without_resume_keeps_the_journal_and_says_how_to_continue(recording, tmp_path, capsys):
    source, ref = recording
    out = tmp_path / "out"
    path = _interrupted_journal(source, out)
    kept = path.read_bytes()
    other = tmp_path / "g.flac"
    sf.write(other, joined(AUSTEN[4:5])[0], RATE)
    assert main([str(source), str(other), "--output_dir", str(out), *FLAGS]) == 1
    err = capsys.readouterr().err
    [line] = [ln for ln in err.splitlines() if "error:" in ln]
    assert str(path) in line and "--resume" in line and "--overwrite" in line and "Traceback" not in err
    assert path.read_bytes() == kept and not (out / "f.txt").exists()
    assert "amiable" in (out / "g.txt").read_text()  # the other file went on
    assert main([str(source), "--output_dir", str(out), "--resume", *FLAGS]) == 0
    assert (out / "f.txt").read_text() == (ref / "f.txt").read_text() and not path.exists()
    _interrupted_journal(source, out)
    assert main([str(source), "--output_dir", str(out), "--overwrite", *FLAGS]) == 0
    assert (out / "f.txt").read_text() == (ref / "f.txt").read_text() and not path.exists()
    assert main([str(source), "--output_dir", str(out), "--resume", "--overwrite", *FLAGS]) == 2


def test_two_runs_killed_then_resumed_never_double_the_transcript(recording, tmp_path):
    """The issue's scenario with real processes: two `--resume` runs started together, both killed with -9
    once a window is journaled, then one more `--resume`: a refusal or the exact single-run transcript."""
    source, ref = recording
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "unique_asr.cli", str(source), "--output_dir", str(out), "--resume", *FLAGS]
    runs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    journal = journal_path(out, source.stem)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and any(r.poll() is None for r in runs):
        if journal.exists() and len(journal.read_bytes().splitlines()) >= 2:  # header + a finished window
            break
        time.sleep(0.05)
    for r in runs:
        if r.poll() is None:
            r.send_signal(signal.SIGKILL)
    errors = [r.communicate()[1] for r in runs]
    for r, err in zip(runs, errors):
        assert r.returncode in (-signal.SIGKILL, 0, 1), err
        if r.returncode == 1:  # the refusal: one line naming the other run's process
            [line] = [ln for ln in err.splitlines() if "error:" in ln]
            assert "another run (pid" in line and "Traceback" not in err
    if journal.exists():
        records = Journal(journal, resume=True).records  # replayable: no window twice, none out of order
        assert [r.index for r in records] == list(range(len(records)))
    assert main([str(source), "--output_dir", str(out), "--resume", *FLAGS]) == 0
    assert (out / "f.txt").read_text() == (ref / "f.txt").read_text()
    ids = [s["id"] for s in json.loads((out / "f.json").read_text())["segments"]]
    assert ids == list(range(len(ids)))
    assert not journal.exists() and not lock_path(out, source.stem).exists()
