"""scripts/device/*.sh, the calls made on the scarce GPU machine: every benchmark invocation in them parses with
its script's own argument parser (environment defaults substituted), so a misspelt flag fails here and not
after a machine has been waited for."""

from __future__ import annotations

import pathlib
import re
import shlex

import pytest
from script_loader import SCRIPTS, load_script

DEVICE = SCRIPTS / "device"
PARSED = {"bench_kernels.py": "bench_kernels", "bench_e2e.py": "bench_e2e", "bench_refine.py": "bench_refine",
          "sweep_launch.py": "sweep_launch", "profile_select.py": "profile_select", "bench_prefill.py": "bench_prefill",
          "bench_speech_pipeline.py": "bench_speech_pipeline"}  # scripts with parse_args(argv)


def invocations(path: pathlib.Path) -> list[tuple[str, list[str]]]:
    """(script file, argv) of every `python3 [scripts/]<name>.py ...` line of a device script (continuations
    joined, ${VAR:-default} / ${VAR-default} -> default, ${VAR:+word} -> '' (unset), $OUT -> /tmp/out, the
    llm_decode loop's $arms / $extra -> its int8 arm's values, any other variable -> '', redirections dropped)."""
    text = path.read_text().replace("\\\n", " ")
    text = re.sub(r"\$\{(\w+):\+([^}]*)\}", "", text)
    text = re.sub(r"\$\{(\w+)-([^}]*)\}", r"\2", re.sub(r"\$\{(\w+):-([^}]*)\}", r"\2", text))
    calls = []
    for line in text.splitlines():
        m = re.search(r"python3 (?:scripts/)?(\w+\.py)(.*)", line)
        if not m or m.group(1) not in PARSED:
            continue
        args = re.split(r"\s(?:>|2>|&&|\|\||;|\|)", m.group(2))[0]
        args = (args.replace("$OUT", "/tmp/out").replace("$extra", "--stats-dtype int8 --refine 4")
                .replace("$arms", "dense unique"))
        args = re.sub(r"\$\{?\w+\}?", "", args)
        calls.append((m.group(1), shlex.split(args)))
    return calls


SCRIPTS_SH = sorted(DEVICE.glob("*.sh"))


def scripts_called(path: pathlib.Path) -> list[pathlib.Path]:
    """The device scripts `path` runs (`bash scripts/device/<name>.sh` lines)."""
    return [DEVICE / name for name in re.findall(r"bash scripts/device/(\w+\.sh)", path.read_text())]


@pytest.mark.parametrize("path", SCRIPTS_SH, ids=[p.name for p in SCRIPTS_SH])
def test_every_benchmark_call_parses(path, capsys):
    calls = invocations(path)
    called = [p for p in scripts_called(path) if p != path]
    assert calls or called, f"{path.name} runs no benchmark script"
    assert all(p.exists() for p in called), called
    for script, argv in calls:
        module = load_script(PARSED[script])
        if "--report" in argv or argv[:1] == ["report"]:
            continue  # the table step: reads a JSON file the run wrote
        module.parse_args(argv)  # SystemExit (argparse) on an unknown or malformed option
