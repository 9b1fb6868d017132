"""README's two set-up commands stay true: CI extracts the test command; the demo's sample exists."""

import pathlib
import shlex
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]
AWK = "/<!-- {0} -->/{{found=1; next}} found && /^```/{{if (fence) exit; fence=1; next}} fence{{print; exit}}"


def _command(marker: str) -> str:
    return subprocess.run(["awk", AWK.format(marker), str(ROOT / "README.md")], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_ci_runs_the_readme_test_command():
    cmd = _command("test-command")
    assert cmd.endswith("python -m pytest -q") and 'pip install -q -c constraints.txt -e ".[test]"' in cmd
    assert AWK.format("test-command") in (ROOT / ".ci/run").read_text()


def test_demo_command_transcribes_a_bundled_sample():
    words = shlex.split(_command("demo-command"))
    target = words[words.index("unique-transcribe") + 1]
    assert (ROOT / target).is_file() and (ROOT / target).with_suffix(".txt").is_file()
