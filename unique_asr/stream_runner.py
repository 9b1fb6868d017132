"""The CLI's many-files loop for speech-LLMs with --batch_size > 1: files decoded together as rows of one paged
cache (unique_asr.stream_transcribe.transcribe_many), each file's outputs written and its journal removed as soon
as it finishes; one progress bar over the audio seconds of all files; per-file errors on one line each."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from tqdm import tqdm

from unique_asr.errors import OutputError, UniqueASRError
from unique_asr.journal import Journal
from unique_asr.lock import OutputLock
from unique_asr.stream_transcribe import transcribe_many
from unique_asr.writers import format_timestamp, write_outputs


def run_files_together(transcriber, sources: Sequence[str], stems: Sequence[str], options, output_dir: Path,
                       formats: Sequence[str], *, journal_path, output, quiet: bool, verbose: bool) -> int:
    """Returns the number of files that failed. Every file is transcribed under its output lock (held until the
    run ends); a file whose lock or journal cannot be had is reported on one line and left out."""
    from unique_asr.audio import probe
    from unique_asr.runner import lock_path

    failures, total = 0, 0.0
    kept_sources, kept_stems, journals = [], [], []
    with ExitStack() as locks:
        for source, stem in zip(sources, stems):
            try:
                locks.enter_context(OutputLock(lock_path(output_dir, stem), str(Path(output_dir) / stem)))
                try:
                    journal = Journal(journal_path(output_dir, stem), resume=output.resume, overwrite=output.overwrite)
                except OSError as exc:
                    raise OutputError(f"{journal_path(output_dir, stem)}: cannot write progress journal "
                                      f"({exc.strerror or exc})") from exc
            except UniqueASRError as exc:
                failures += 1
                print(f"unique-transcribe: error: {exc}", file=sys.stderr)
                continue
            kept_sources.append(source)
            kept_stems.append(stem)
            journals.append(journal)
            try:
                total += probe(source).duration_s or 0.0
            except UniqueASRError:
                pass  # reported when its turn comes
        if kept_sources:
            failures += _run(transcriber, kept_sources, kept_stems, journals, options, output_dir, formats, total,
                             quiet=quiet, verbose=verbose)
    return failures


def _run(transcriber, sources, stems, journals, options, output_dir, formats, total: float, *, quiet: bool,
         verbose: bool) -> int:
    from unique_asr.runner import summary_line

    failures = 0
    started = time.perf_counter()
    bundle = transcriber.speech_bundle(options)
    done_s = [0.0] * len(sources)
    with tqdm(total=round(total, 1) or None, unit="s", disable=quiet, file=sys.stderr, desc=f"{len(sources)} files",
              bar_format="{l_bar}{bar}| {n:.1f}/{total_fmt} s audio [{elapsed}<{remaining}]") as bar:

        def on_segment(index, segment):
            bar.update(max(0.0, segment.end - done_s[index]))
            done_s[index] = max(done_s[index], segment.end)
            if verbose:
                bar.write(f"{Path(sources[index]).name} [{format_timestamp(segment.start)} --> "
                          f"{format_timestamp(segment.end)}] {segment.text.strip()}")

        for result in transcribe_many(bundle, sources, options, journals, on_segment):
            source, journal = sources[result.index], journals[result.index]
            label = "stdin" if source == "-" else Path(source).name
            try:
                if result.error is not None:
                    raise result.error
                paths = write_outputs(result.segments, result.info, output_dir, stems[result.index], formats)
                journal.finish()
            except UniqueASRError as exc:
                failures += 1
                if not journal.records:
                    journal.finish()
                bar.write(f"unique-transcribe: error: {exc}", file=sys.stderr)
                continue
            info = result.info
            bar.update(max(0.0, (info.duration_s or 0.0) - done_s[result.index]))
            done_s[result.index] = info.duration_s or 0.0
            if not quiet:  # the files share the wall time: RTFx for the run, below
                bar.write(summary_line(label, info, len(result.segments), options, paths), file=sys.stderr)
    if not quiet:
        wall = time.perf_counter() - started
        rtfx = f" (RTFx {bar.n / wall:.1f})" if wall > 0 and bar.n else ""
        print(f"{len(sources)} files decoded together ({options.batch_size} rows) in {wall:.1f} s{rtfx}",
              file=sys.stderr)
    return failures
