"""Packaging: the wheel (non-editable) is what the suite imports, carries the MIT licence, starts the CLI,
and the [train] extra alone imports the training code; the CLI starts without transformers."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _dist_name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def _modules_of(dists: set[str]) -> set[str]:
    """Top-level module names that the given installed distributions provide."""
    return {module for module, owners in packages_distributions().items()
            if any(o.lower().replace("_", "-") in dists for o in owners) and not module.startswith("_")}


def _blocker(modules: set[str]) -> str:
    """Python source that makes importing any of `modules` fail, as if their packages were not installed."""
    return (
        "import sys, importlib.abc\n"
        f"BLOCKED = {sorted(modules)!r}\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r} (not in this extra)', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
    )


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory) -> tuple[Path, Path]:
    """Build the wheel from the tracked sources and install it (no dependencies) into a folder of its own."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    for name in ("unique_asr", "kernels"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(tmp / "dist"), str(src)], check=True, timeout=600)
    (wheel,) = (tmp / "dist").glob("unique_asr-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                    str(tmp / "site"), str(wheel)], check=True, timeout=600)
    return wheel, tmp / "site"


def test_wheel_metadata_carries_the_mit_licence(wheel_site):
    wheel, _ = wheel_site
    with zipfile.ZipFile(wheel) as z:
        metadata = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(metadata).decode()
        licence = [n for n in z.namelist() if n.endswith("licenses/LICENSE")]
        assert licence and z.read(licence[0]).decode().startswith("MIT License")
        assert any(n.startswith("unique_asr/kernels/") for n in z.namelist())
    assert "License-Expression: MIT" in text


def test_suite_imports_the_installed_wheel_not_the_source_folder(wheel_site):
    """pytest run from the repository root (where unique_asr/ sits) with the wheel first on the path."""
    _, site = wheel_site
    env = {**os.environ, "PYTHONPATH": str(site), "UNIQUE_ASR_EXPECT_INSTALLED": str(site)}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "tests/test_packaging.py::test_probe_where_unique_asr_comes_from"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "1 passed" in run.stdout


def test_probe_where_unique_asr_comes_from():
    import unique_asr
    import unique_asr.kernels

    assert str(ROOT) not in {str(Path(p or os.getcwd()).resolve()) for p in sys.path}
    expected = os.environ.get("UNIQUE_ASR_EXPECT_INSTALLED")
    if expected:  # under test_suite_imports_the_installed_wheel_not_the_source_folder
        assert Path(unique_asr.__file__).resolve().is_relative_to(Path(expected).resolve())
        assert Path(unique_asr.kernels.__file__).resolve().is_relative_to(Path(expected).resolve())


def test_installed_cli_runs_with_base_dependencies_only(wheel_site, tmp_path):
    """`unique-transcribe` from the wheel transcribes with no extra installed (their modules blocked)."""
    _, site = wheel_site
    base = {_dist_name(r) for r in PROJECT["dependencies"]}
    extras = {_dist_name(r) for reqs in PROJECT["optional-dependencies"].values() for r in reqs} - base
    code = _blocker(_modules_of(extras) - {"unique_asr"}) + (
        "import sys\nfrom unique_asr.cli import main\n"
        f"code = main([{str(ROOT / 'samples' / 'hello.flac')!r}, '--model', 'tiny.en', '-o', {str(tmp_path)!r},"
        " '-f', 'txt', '--quiet'])\n"
        "import unique_asr\nprint(unique_asr.__file__)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'transformers')[:3])\nsys.exit(code)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)},
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert Path(lines[-2]).resolve().is_relative_to(site.resolve())
    assert lines[-1] == "[]"  # the CLI never imports transformers (mel filters are built with numpy)
    assert "short test" in (tmp_path / "hello.txt").read_text().lower()


@pytest.mark.parametrize("extra,module", [("train", "unique_asr.train.run"), ("eval", "unique_asr.eval.metrics")])
def test_each_extra_imports_on_its_own(wheel_site, extra, module):
    _, site = wheel_site
    base = {_dist_name(r) for r in PROJECT["dependencies"]}
    mine = {_dist_name(r) for r in PROJECT["optional-dependencies"][extra]}
    others = {_dist_name(r) for reqs in PROJECT["optional-dependencies"].values() for r in reqs} - base - mine
    code = _blocker(_modules_of(others) - {"unique_asr"}) + f"import {module}\nprint({module}.__file__)\n"
    run = subprocess.run([sys.executable, "-c", code], cwd=site, env={**os.environ, "PYTHONPATH": str(site)},
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert Path(run.stdout.strip()).resolve().is_relative_to(site.resolve())


def test_mel_filters_equal_transformers():
    from transformers.audio_utils import mel_filter_bank

    from unique_asr.mel import mel_filters

    for n_mels in (80, 128):
        theirs = mel_filter_bank(num_frequency_bins=201, num_mel_filters=n_mels, min_frequency=0.0,
                                 max_frequency=8000.0, sampling_rate=16000, norm="slaney", mel_scale="slaney")
        np.testing.assert_allclose(mel_filters(n_mels), theirs, rtol=1e-12, atol=1e-15)
        assert np.array_equal(mel_filters(n_mels).astype(np.float32), theirs.astype(np.float32))
