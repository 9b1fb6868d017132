"""Corpus jobs on the real engines, on CPU: torchrun with 2 ranks and a local Ray cluster with 2 workers.

Each job is started as a user would (a subprocess), one worker is SIGKILLed while a file is half done (a
window of it is in its journal), and the job must still finish with: every input accounted for in the
result manifest, transcripts byte-equal to the plain single-process CLI's, the files committed before the
kill untouched (nothing done twice), and the killed file continued from its journal (its finished windows
not decoded again). Windows are short (--max_window_s 10, --batch_size 1) so a file spans several journaled
windows; real speech (tests/data/speech) joined into longer recordings."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
import torch

from speech_data import AUSTEN, clip, joined
from unique_asr.cli import main as transcribe_main

RATE = 16000
OPTIONS = ["--model", "tiny.en", "--batch_size", "1", "--max_window_s", "10", "--quiet"]
FORMATS = ("txt", "srt", "vtt", "tsv", "json")
TIMEOUT_S = 420


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two recordings of 16 s (two 10 s windows each), a short clip and an empty file."""
    root = tmp_path_factory.mktemp("corpus")
    sf.write(root / "long_a.flac", joined(AUSTEN[:3], gap_s=0.6)[0], RATE)
    sf.write(root / "long_b.flac", joined(AUSTEN[2:], gap_s=0.6)[0], RATE)
    sf.write(root / "goforward.flac", clip("goforward"), RATE)
    (root / "empty.wav").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def baseline(corpus, tmp_path_factory):
    """The plain CLI, one process, over the same files. One thread, as each worker of the jobs runs (torchrun
    sets OMP_NUM_THREADS=1 for several ranks; the Ray actors get --cpus_per_worker 1): summation order, and so
    the last bits of avg_logprob in the JSON, depend on the thread count."""
    out = tmp_path_factory.mktemp("baseline")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert transcribe_main([str(corpus), "--output_dir", str(out), *OPTIONS]) == 1  # empty.wav fails
    finally:
        torch.set_num_threads(threads)
    return out


def _key(item_id: str) -> str:
    return hashlib.sha1(item_id.encode()).hexdigest()


def _state_file(out: Path, kind: str, item_id: str) -> Path:
    key = _key(item_id)
    return out / ".corpus" / kind / key[:2] / f"{key}.json"


def _kill_mid_file(proc: subprocess.Popen, out: Path) -> tuple[str, int, dict[str, bytes]]:
    """SIGKILL the worker of the first file that has a finished window journaled but is not committed.
    Returns (its id, windows journaled at the kill, commit records existing at the kill)."""
    deadline = time.monotonic() + TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline:
        for journal in out.glob(".*.journal.jsonl"):
            item_id = journal.name[1:-len(".journal.jsonl")]
            windows = journal.read_bytes().count(b"\n") - 1  # the first line is the header
            claim = _state_file(out, "claims", item_id)
            if windows >= 1 and claim.exists() and not _state_file(out, "done", item_id).exists():
                done = {p.name: p.read_bytes() for p in (out / ".corpus" / "done").rglob("*.json")}
                os.kill(json.loads(claim.read_text())["pid"], signal.SIGKILL)
                return item_id, windows, done
        time.sleep(0.02)
    pytest.fail(f"the job ended (rc {proc.poll()}) before any file was half done")


def _check(out: Path, baseline: Path, corpus: Path, killed: str, windows: int, done_before: dict[str, bytes]):
    rows = {r["id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    inputs = sorted(p.name.rsplit(".", 1)[0] for p in corpus.iterdir())
    assert sorted(rows) == inputs  # every input accounted for
    assert rows.pop("empty")["status"] == "failed"
    assert all(r["status"] == "ok" for r in rows.values()), rows
    for rid in rows:  # transcripts equal the single-process CLI's
        for fmt in FORMATS:
            assert (out / f"{rid}.{fmt}").read_bytes() == (baseline / f"{rid}.{fmt}").read_bytes(), (rid, fmt)
    # nothing done twice: records committed before the kill were not rewritten, and only files that were in
    # flight at the kill (one per worker) were started again
    after = {p.name: p.read_bytes() for p in (out / ".corpus" / "done").rglob("*.json")}
    assert all(after[name] == record for name, record in done_before.items())
    assert sum(r["attempt"] > 1 for r in rows.values()) <= 2
    # the killed file continued from its journal: its finished windows were replayed, not decoded again
    assert rows[killed]["attempt"] == 2 and rows[killed]["resumed_windows"] >= windows >= 1, rows[killed]
    assert rows[killed]["windows"] > rows[killed]["resumed_windows"]
    assert not list(out.glob(".*journal*"))


def _env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"job timed out:\n{err[-3000:]}")
    return proc.returncode, err


def test_torchrun_two_ranks_survive_a_killed_rank(corpus, baseline, tmp_path):
    out = tmp_path / "out"
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.Popen(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "--max-restarts", "1", "--monitor-interval", "0.2",
         "-m", "unique_asr.corpus", str(corpus), "--output_dir", str(out), *OPTIONS],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    killed, windows, done_before = _kill_mid_file(proc, out)
    rc, err = _finish(proc)
    assert rc == 0, err[-3000:]  # torchrun restarted the ranks; the bad file is in the results, not the exit code
    assert "failed: empty:" in err and "3 ok" in err, err[-3000:]
    _check(out, baseline, corpus, killed, windows, done_before)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r.get("worker") for r in rows if r["status"] == "ok"} == {"rank0", "rank1"}


def test_ray_two_workers_survive_a_killed_worker(corpus, baseline, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "unique_asr.corpus", str(corpus), "--output_dir", str(out), "--launcher", "ray",
         "--workers", "2", "--cpus_per_worker", "1", *OPTIONS],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    killed, windows, done_before = _kill_mid_file(proc, out)
    rc, err = _finish(proc)
    assert rc == 1 and "failed: empty:" in err and "3 ok" in err, err[-3000:]  # exit 1: a file failed
    _check(out, baseline, corpus, killed, windows, done_before)
