"""Scoring stays free of torch; the eval script end to end (only once the transcriber API exists)."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import soundfile as sf

from unique_asr.eval.manifest import read_jsonl, write_jsonl

ROOT = pathlib.Path(__file__).resolve().parents[2]
HELLO = ROOT / "samples" / "hello.flac"


def test_scoring_imports_no_torch():
    code = (
        "import sys, runpy; sys.argv = ['score_wer.py', '--help']\n"
        "try:\n    runpy.run_path('scripts/score_wer.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "import unique_asr.eval.prepare, unique_asr.eval.report\n"
        "bad = sorted(m for m in ('torch', 'triton') if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_eval_then_score_tiny_en(tmp_path):
    data = tmp_path / "set"
    data.mkdir()
    shutil.copy(HELLO, data / "hello.flac")
    text = (HELLO.with_suffix(".txt")).read_text(encoding="utf-8").strip()
    write_jsonl(
        data / "manifest.jsonl",
        [
            {
                "id": "hello",
                "path": "hello.flac",
                "duration": sf.info(str(HELLO)).duration,
                "sample_rate": 16000,
                "text": text,
            }
        ],
    )
    out = tmp_path / "result.jsonl"
    cmd = [
        sys.executable,
        "scripts/eval_wer.py",
        "model=tiny.en",
        "dataset=custom",
        "dataset.name=hello",
        f"dataset.manifest={data / 'manifest.jsonl'}",
        f"output={out}",
        "sparsity=dense",
        "transcribe.device=cpu",
        "transcribe.dtype=float32",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    [row] = read_jsonl(out)
    assert (
        row["model"] == "tiny.en"
        and row["sparsity"]["mode"] == "dense"
        and row["normaliser"] == "whisper_english"
    )
    assert row["wall_s"] > 0 and row["segments"] and row["hypothesis"]
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False, env=env)
    assert second.returncode == 0 and "0 of 1 items to transcribe" in second.stderr + second.stdout
    assert len(list(read_jsonl(out))) == 1
    scored = subprocess.run(
        [sys.executable, "scripts/score_wer.py", str(out), "--report-dir", str(tmp_path / "r")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert scored.returncode == 0, scored.stderr
    [summary] = json.loads((tmp_path / "r" / "scores.json").read_text())
    assert summary["wer"] < 0.5  # clear synthesised speech
