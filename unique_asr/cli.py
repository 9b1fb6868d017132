"""unique-transcribe: argparse -> TranscribeOptions -> Transcriber. No model logic lives here.

Flags are generated from the option dataclasses (one flag per field; FLAG_ALIASES renames the few whose
field name reads badly on a command line), so the CLI, the API and the Hydra configs cannot drift apart.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import signal
import sys
import time
from dataclasses import MISSING, fields
from pathlib import Path

from unique_asr.config import (
    DecodeOptions,
    OutputOptions,
    SparsityConfig,
    SubtitleOptions,
    TranscribeOptions,
    with_overrides,
)
from unique_asr.errors import OutputError, UniqueASRError
from unique_asr.model_names import WHISPER_NAMES

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".wma", ".webm", ".mp4", ".mkv", ".aiff", ".aif"}
OPTION_CLASSES = (TranscribeOptions, DecodeOptions, SparsityConfig)
NESTED = ("decode", "sparsity")
# Fields whose CLI flag differs from the field name (set by `option(..., flag=...)` in config.py).
FLAG_ALIASES = {f.name: f.metadata["flag"] for cls in OPTION_CLASSES for f in fields(cls)
                if f.metadata.get("flag")}


def option_flags() -> dict[str, tuple[type, str]]:
    """CLI flag name -> (option class, field name), for every leaf option field."""
    table = {}
    for cls in OPTION_CLASSES:
        for f in fields(cls):
            if f.name not in NESTED:
                table[FLAG_ALIASES.get(f.name, f.name)] = (cls, f.name)
    return table


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _converter(annotation):
    """Turn a dataclass field annotation (string form) into an argparse type callable."""
    hint = str(annotation).replace(" ", "")
    if hint.startswith("tuple[float"):
        return lambda s: tuple(float(x) for x in s.split(",") if x)
    if hint.startswith("tuple[int"):
        return lambda s: tuple(int(x) for x in s.split(",") if x)
    if hint.startswith("bool"):
        return _parse_bool
    base = hint.split("|")[0]
    optional = "None" in hint
    conv = {"int": int, "float": float, "str": str}[base]
    if optional:
        return lambda s: None if s.lower() == "none" else conv(s)
    return conv


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage of ~40 flags would bury the message), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _flag_help(field, default) -> str:
    """--help text from the field's metadata: description, choices, default."""
    meta = field.metadata
    parts = [meta.get("help") or field.name]
    shown = ",".join(str(v) for v in default) if isinstance(default, tuple) else default
    parts.append(f"default: {'none' if shown is None else shown}")
    return "; ".join(parts).replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    from unique_asr import __version__

    parser = _Parser(
        prog="unique-transcribe",
        description="Transcribe long recordings with Whisper models and UNIQUE page-sparse attention.",
    )
    parser.add_argument("inputs", nargs="+", help="audio files, folders, globs, or - for standard input")
    parser.add_argument("--model", default="base",
                        help="tiny.en or base (offline); a Whisper name downloaded once from the Hugging Face hub "
                             f"({', '.join(n for n in WHISPER_NAMES if n not in ('tiny.en', 'base'))}); "
                             "a local Whisper folder; or a hub id")
    parser.add_argument("--model_dir", default=None,
                        help="folder for downloaded models and converted weights (default: the Hugging Face "
                             "cache and ~/.cache/unique-asr)")
    parser.add_argument("--output_dir", "-o", default=".", help="folder for the transcripts")
    parser.add_argument("--output_format", "-f", default="all", help="comma list of txt,srt,vtt,tsv,json, or all")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no per-segment lines")
    parser.add_argument("--verbose", action="store_true", help="print each segment as it is decoded")
    journal = parser.add_argument_group("interrupted files (fields of OutputOptions)")
    for field in fields(OutputOptions):  # switches: --resume / --no-resume
        journal.add_argument(f"--{field.name}", action=argparse.BooleanOptionalAction, default=field.default,
                             help=_field_doc(OutputOptions, field.name))
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_option_arguments(parser)
    return parser


def add_option_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per option field (shared by unique-transcribe and unique-corpus)."""
    layout = parser.add_argument_group("subtitle layout (fields of SubtitleOptions)")
    for field in fields(SubtitleOptions):
        layout.add_argument(f"--{field.name}", dest=field.name, type=_converter(field.type), default=field.default,
                            metavar="{true,false}" if str(field.type) == "bool" else None,
                            help=_flag_help(field, field.default))
    group = parser.add_argument_group("transcription options (fields of TranscribeOptions, DecodeOptions, SparsityConfig)")
    for flag, (cls, name) in option_flags().items():
        field = next(f for f in fields(cls) if f.name == name)
        default = field.default if field.default is not MISSING else field.default_factory()
        choices = field.metadata.get("choices") or (("true", "false") if str(field.type) == "bool" else None)
        metavar = "{" + ",".join(choices) + "}" if choices else None
        aliases = [f"--{alias}" for alias in field.metadata.get("aliases", ())]  # same dest: one value
        group.add_argument(f"--{flag}", *aliases, dest=flag, type=_converter(field.type), default=argparse.SUPPRESS,
                           metavar=metavar, help=_flag_help(field, default))


def _field_doc(cls, name: str) -> str:
    """The 'name: ...' line of a dataclass docstring."""
    for line in (cls.__doc__ or "").splitlines():
        if line.strip().startswith(f"{name}: "):
            return line.strip()[len(name) + 2 :]
    return f"{cls.__name__}.{name}"


def options_from_args(args: argparse.Namespace) -> TranscribeOptions:
    """Only flags the user gave override the dataclass defaults."""
    given = vars(args)
    overrides = {name: given[flag] for flag, (_, name) in option_flags().items() if flag in given}
    return with_overrides(TranscribeOptions(), **overrides)


def expand_inputs(inputs: list[str]) -> tuple[list[str], list[str]]:
    """Files, folders (recursive, audio suffixes) and globs -> (sources in order, one-line problems)."""
    sources, problems = [], []
    for item in inputs:
        path = Path(item)
        if item == "-":
            sources.append(item)
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            sources.extend(str(p) for p in found)
            if not found:
                problems.append(f"{item}: folder holds no audio files")
        elif path.exists():
            sources.append(item)
        else:
            matches = sorted(glob.glob(item, recursive=True))
            sources.extend(m for m in matches if Path(m).is_file())
            if not matches:
                problems.append(f"{item}: no such file")
    return list(dict.fromkeys(sources)), problems


def output_stem(source: str, taken: set[str]) -> str:
    """File stem for outputs; 'stdin' for -, disambiguated when two inputs share a name."""
    stem = "stdin" if source == "-" else Path(source).stem
    candidate, n = stem, 1
    while candidate in taken:
        n += 1
        candidate = f"{stem}-{n}"
    taken.add(candidate)
    return candidate


def check_output_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path}: cannot create output folder ({exc.strerror or exc})") from exc
    if not os.access(path, os.W_OK):
        raise OutputError(f"{path}: output folder is not writable")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:  # a file-size limit (ulimit -f) then fails the write with a one-line error instead of killing us
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    except (AttributeError, ValueError):  # no such signal here, or not the main thread
        pass
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from unique_asr.models.registry import resolve as resolve_model
    from unique_asr.runner import run_files  # heavy imports (torch) only once arguments are valid

    try:
        options = options_from_args(args)
        output = OutputOptions(**{f.name: getattr(args, f.name) for f in fields(OutputOptions)})
        resolve_model(args.model)  # an unknown name is a bad option value: exit 2 before any loading
        subtitles = SubtitleOptions(**{f.name: getattr(args, f.name) for f in fields(SubtitleOptions)})
        if subtitles.needs_words and not options.word_timestamps:
            raise ValueError("max_line_width and highlight_words lay subtitles out from timed words: add "
                             "--word_timestamps true")
        formats = _parse_formats(args.output_format)
        output_dir = Path(args.output_dir)
        check_output_dir(output_dir)
    except (ValueError, UniqueASRError) as exc:
        print(f"unique-transcribe: error: {exc}", file=sys.stderr)
        return 2
    sources, problems = expand_inputs(args.inputs)
    for problem in problems:
        print(f"unique-transcribe: error: {problem}", file=sys.stderr)
    if not sources:
        return 1 if problems else 2
    started = time.perf_counter()
    try:
        failures = run_files(sources, args.model, options, output_dir, formats, output=output,
                             model_dir=args.model_dir, subtitles=subtitles, quiet=args.quiet, verbose=args.verbose, stems=_stems(sources))
    except KeyboardInterrupt:
        print("unique-transcribe: interrupted; run again with --resume to continue where it stopped", file=sys.stderr)
        return 130
    except ValueError as exc:  # an option the loaded model cannot honour (checked before the first file)
        print(f"unique-transcribe: error: {exc}", file=sys.stderr)
        return 2
    except UniqueASRError as exc:
        print(f"unique-transcribe: error: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"done: {len(sources) - failures} of {len(sources)} files in {time.perf_counter() - started:.1f} s",
              file=sys.stderr)
    return 1 if failures or problems else 0


def _parse_formats(spec: str) -> tuple[str, ...]:
    from unique_asr.writers import parse_formats

    return parse_formats(spec)


def _stems(sources: list[str]) -> list[str]:
    taken: set[str] = set()
    return [output_stem(s, taken) for s in sources]


if __name__ == "__main__":
    sys.exit(main())

