"""Many files, one model load: per-file failure isolation, progress over audio seconds, resume, outputs.

The CLI parses arguments and calls `run_files`; everything here is also usable from Python.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from unique_asr.api import load_model
from unique_asr.config import OutputOptions, SubtitleOptions, TranscribeOptions
from unique_asr.errors import OutputError, UniqueASRError
from unique_asr.journal import Journal
from unique_asr.lock import OutputLock
from unique_asr.progress import SpeechBar
from unique_asr.types import Segment
from unique_asr.writers import format_timestamp, write_outputs

DEFAULT_OUTPUT = OutputOptions()  # frozen: one shared default instance


def journal_path(output_dir: Path, stem: str) -> Path:
    """Where an unfinished file's per-window progress is kept (deleted once its outputs are written)."""
    return Path(output_dir) / f".{stem}.journal.jsonl"


def lock_path(output_dir: Path, stem: str) -> Path:
    """The lock a run holds while it transcribes into output_dir/stem.* (removed when it is done)."""
    return Path(output_dir) / f".{stem}.lock"


def run_files(
    sources: Sequence[str],
    model_name: str,
    options: TranscribeOptions,
    output_dir: Path,
    formats: Sequence[str],
    *,
    stems: Sequence[str],
    output: OutputOptions = DEFAULT_OUTPUT,
    quiet: bool = False,
    verbose: bool = False,
    model_dir: str | None = None,
    subtitles: SubtitleOptions | None = None,
) -> int:
    """Transcribe every source with one model; returns the number of files that failed.

    A bad file (AudioError, OutputError, ...) is reported on one line naming it, and the others go on; so
    does an unexpected failure inside one file (its traceback is logged at debug level, --verbose).
    ModelError (the model cannot load) and ValueError (an option the model cannot honour, such as translate
    with an English-only model) are raised before the first file: nothing can be transcribed without them.
    """
    if options.threads:
        torch.set_num_threads(options.threads)  # before loading: conversion and quantization use them too
    transcriber = load_model(model_name, device=options.device, dtype=options.dtype, sparsity=options.sparsity,
                             model_dir=model_dir)
    transcriber.check_options(options)
    if transcriber.bundle.model.kind == "decoder-only" and options.batch_size > 1 and len(sources) > 1:
        from unique_asr.stream_runner import run_files_together  # speech-LLM: files as rows of one cache

        return run_files_together(transcriber, sources, stems, options, Path(output_dir), formats,
                                  journal_path=journal_path, output=output, quiet=quiet, verbose=verbose)
    failures = 0
    for source, stem in zip(sources, stems):
        try:
            transcribe_file(transcriber, source, stem, options, Path(output_dir), formats,
                            output=output, quiet=quiet, verbose=verbose, subtitles=subtitles)
        except UniqueASRError as exc:
            failures += 1
            print(f"unique-transcribe: error: {exc}", file=sys.stderr)
        except Exception as exc:  # a bug or a resource failure in one file must not abandon the others
            failures += 1
            logging.getLogger(__name__).debug("traceback for %s", source, exc_info=True)
            detail = " ".join(str(exc).split())[:300]
            print(f"unique-transcribe: error: {_label(source)}: failed ({type(exc).__name__}: {detail})",
                  file=sys.stderr)
    return failures


def transcribe_file(transcriber, source: str, stem: str, options: TranscribeOptions, output_dir: Path,
                    formats: Sequence[str], *, output: OutputOptions = DEFAULT_OUTPUT, quiet: bool = False,
                    verbose: bool = False, subtitles: SubtitleOptions | None = None) -> list[Path]:
    """One file, under its output lock: journaled decode -> outputs -> coverage line. Returns the written paths."""
    with OutputLock(lock_path(output_dir, stem), str(Path(output_dir) / stem)):
        return _transcribe_locked(transcriber, source, stem, options, output_dir, formats, output=output,
                                  quiet=quiet, verbose=verbose, subtitles=subtitles)


def _transcribe_locked(transcriber, source: str, stem: str, options: TranscribeOptions, output_dir: Path,
                       formats: Sequence[str], *, output: OutputOptions, quiet: bool, verbose: bool,
                       subtitles: SubtitleOptions | None = None) -> list[Path]:
    try:
        journal = Journal(journal_path(output_dir, stem), resume=output.resume, overwrite=output.overwrite)
    except OSError as exc:
        raise OutputError(f"{journal_path(output_dir, stem)}: cannot write progress journal ({exc.strerror or exc})") from exc
    started = time.perf_counter()
    try:
        segments, info = _decode(transcriber, source, options, journal, quiet=quiet, verbose=verbose)
    except UniqueASRError:
        if not journal.records:
            journal.finish()  # nothing finished: a journal would only be litter next to the outputs
        raise
    paths = write_outputs(segments, info, output_dir, stem, formats, subtitles)
    journal.finish()
    wall = time.perf_counter() - started
    if not quiet:
        print(summary_line(_label(source), info, len(segments), options, paths, wall), file=sys.stderr)
    return paths


def summary_line(label: str, info, n_segments: int, options: TranscribeOptions, paths, wall: float | None = None
                 ) -> str:
    """A file's closing line (both model families, one file at a time or many together): the speech its segments
    cover, what was left uncovered and why, guard stops and loops, segments, audio (and its RTFx when the file had
    the wall time to itself), the outputs written."""
    share = 100.0 * info.decoded_s / info.speech_s if info.speech_s else 100.0
    audio = f"{info.duration_s:.1f} s audio"
    if wall is not None:
        audio += f" in {wall:.1f} s (RTFx {info.duration_s / wall if wall > 0 else float('inf'):.1f})"
    return (f"{label}: segments cover {info.decoded_s:.1f} s of {info.speech_s:.1f} s detected speech ({share:.0f} %), "
            f"{_uncovered(info, options)}, {n_segments} segments, {audio} -> {', '.join(str(p) for p in paths)}")


def _uncovered(info, options: TranscribeOptions) -> str:
    """'2 uncovered stretches > 2 s (9.1 s: skipped 1, no-speech 1), 1 guard stop, 0 loops (1.4 / h)'."""
    gaps = info.uncovered
    whys = Counter(g["why"] for g in gaps)
    detail = ", ".join(f"{why} {n}" for why, n in sorted(whys.items()))
    lost = sum(g["end"] - g["start"] for g in gaps)
    text = f"{len(gaps)} uncovered stretches > {options.report_uncovered_s:g} s"
    text += f" ({lost:.1f} s: {detail})" if gaps else ""
    hours = info.duration_s / 3600
    per_hour = f" ({(info.guard_stops + info.loops) / hours:.1f} / h)" if hours > 0 else ""
    return f"{text}, {info.guard_stops} guard stops, {info.loops} loops{per_hour}"


def _decode(transcriber, source: str, options: TranscribeOptions, journal: Journal, *, quiet: bool,
            verbose: bool) -> tuple[list[Segment], object]:
    """Drain the lazy segment iterator behind a progress bar over seconds of detected speech (per window)."""
    bar = SpeechBar(_label(source), disable=quiet)
    try:
        segments_iter, info = transcriber.transcribe(source, options, journal=journal, progress=bar)
        segments: list[Segment] = []
        for segment in segments_iter:
            segments.append(segment)
            if verbose:
                bar.write(f"[{format_timestamp(segment.start)} --> {format_timestamp(segment.end)}] {segment.text.strip()}")
    finally:
        bar.close()
    return segments, info


def _label(source: str) -> str:
    return "stdin" if source == "-" else Path(source).name
