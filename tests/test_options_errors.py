"""Bad option values: one line, exit 2, before any work (README's bad-options table, row by row); --help
generated from the fields' metadata; --version; python -m unique_asr; one failing file never stops the rest."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from unique_asr import __version__
from unique_asr.cli import OPTION_CLASSES, build_parser, main, option_flags
from unique_asr.config import DecodeOptions, SparsityConfig, TranscribeOptions

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "samples" / "hello.flac"


def _readme_rows() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- bad-options -->", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \| `([^`]+)` \|$", block, flags=re.M)
    assert len(rows) >= 20, block
    return rows


@pytest.mark.parametrize("option,message", _readme_rows())
def test_readme_bad_option_rows_are_the_real_messages(option, message, tmp_path, capsys):
    if option.startswith("--device cuda") and torch.cuda.is_available():
        option = f"--device cuda:{torch.cuda.device_count()}"  # the same check, on a machine with CUDA
        message = f"unique-transcribe: error: device '{option.split()[1]}' asked for, but only"
    out = tmp_path / "out"
    with pytest.raises(SystemExit) if "(see --help)" in message else _no_raise() as raised:
        code = main([str(HELLO), "--model", "tiny.en", "--output_dir", str(out), "--quiet", *shlex.split(option)])
    code = raised.value.code if raised else code
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().startswith(message) and len(err.strip().splitlines()) == 1, err
    assert not out.exists() or not any(out.iterdir())  # nothing written, no journal left


class _no_raise:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_every_flag_has_a_description_and_lists_its_choices():
    text = build_parser().format_help()
    for cls in OPTION_CLASSES:
        for f in fields(cls):
            if f.name in ("decode", "sparsity"):
                continue
            assert len(f.metadata.get("help", "")) > 10, f"{cls.__name__}.{f.name} has no description"
            for choice in f.metadata.get("choices") or ():
                assert choice in text
    for action in build_parser()._actions:
        assert action.help, action.dest
    assert "{" + ",".join(TranscribeOptions.__dataclass_fields__["strategy"].metadata["choices"]) + "}" in text
    assert len(option_flags()) == sum(1 for a in build_parser()._actions if a.dest in option_flags())


def test_api_validates_the_same_values():
    with pytest.raises(ValueError, match="beam_size must be >= 1"):
        DecodeOptions(beam_size=0)
    with pytest.raises(ValueError, match="vad_threshold"):
        TranscribeOptions(vad_threshold=0.0)
    with pytest.raises(ValueError, match="lam must be >= 0"):
        SparsityConfig(lam=-0.1)
    assert DecodeOptions(language="German").language == "de"
    assert DecodeOptions(language="auto").language == "auto"  # detected per window
    assert DecodeOptions(language="none").language is None  # detected once
    assert DecodeOptions(language="Mandarin").language == "zh"


def test_language_table_is_whispers():
    from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

    from unique_asr.languages import ALIASES
    from unique_asr.languages import LANGUAGES as OURS

    assert list(OURS.items()) == list(LANGUAGES.items())
    assert {name: code for name, code in TO_LANGUAGE_CODE.items() if name not in LANGUAGES.values()} == ALIASES


def test_version_and_python_dash_m(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["--version"])
    assert raised.value.code == 0 and capsys.readouterr().out.strip() == f"unique-transcribe {__version__}"
    run = subprocess.run([sys.executable, "-m", "unique_asr", "--version"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == f"unique-transcribe {__version__}"
    from importlib.metadata import version

    assert version("unique-asr") == __version__


def test_a_crash_inside_one_file_does_not_stop_the_others(tmp_path, capsys, monkeypatch):
    """Fault injection: the real transcriber raises an unexpected error for one input only."""
    import unique_asr.api as api

    real = api.Transcriber.transcribe

    def failing_for_one(self, audio, *args, **kwargs):
        if str(audio).endswith("first.flac"):
            raise RuntimeError("injected failure\nwith a second line")
        return real(self, audio, *args, **kwargs)

    monkeypatch.setattr(api.Transcriber, "transcribe", failing_for_one)
    first, second = tmp_path / "first.flac", tmp_path / "second.flac"
    first.write_bytes(HELLO.read_bytes())
    second.write_bytes(HELLO.read_bytes())
    out = tmp_path / "out"
    code = main([str(first), str(second), "--model", "tiny.en", "-o", str(out), "-f", "txt", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.splitlines() == ["unique-transcribe: error: first.flac: failed (RuntimeError: injected failure with a "
                                "second line)"]
    assert "short test" in (out / "second.txt").read_text().lower()
    assert not (out / "first.txt").exists()
