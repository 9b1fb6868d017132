"""The CI guard in tests/conftest.py: under CI=true only a missing CUDA device may skip a test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


DEMO = '''
import pytest

def test_runs():
    pass

@pytest.mark.skipif(True, reason="needs espeak-ng")
def test_skipped_for_a_program():
    pass

@pytest.mark.skipif(True, reason="needs CUDA")
def test_skipped_for_cuda():
    pass

def test_skipped_at_run_time():
    pytest.skip("the data set is not there")

@pytest.mark.xfail(reason="known", strict=True)
def test_expected_failure():
    assert False
'''


def _run(tmp_path: Path, ci: str) -> str:
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_demo.py").write_text(DEMO)
    env = {**os.environ, "CI": ci, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}  # as on the CI machine
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", str(tmp_path)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    return out.stdout


def test_under_ci_only_the_cuda_skip_is_accepted(tmp_path):
    out = _run(tmp_path, "true")
    assert "ERROR test_demo.py::test_skipped_for_a_program" in out  # a setup-time skip turns into an error
    assert "FAILED test_demo.py::test_skipped_at_run_time" in out
    assert "needs espeak-ng" in out and "a missing CUDA device" in out
    assert "SKIPPED [1] test_demo.py" in out and "needs CUDA" in out
    assert "1 failed, 1 passed, 1 skipped, 1 xfailed, 1 error" in out


def test_outside_ci_skips_stay_skips(tmp_path):
    out = _run(tmp_path, "")
    assert "1 passed, 3 skipped, 1 xfailed" in out
