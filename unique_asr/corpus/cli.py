"""unique-corpus (also `python -m unique_asr.corpus`, and under torchrun): argparse -> JobSpec -> a launcher.

The transcription flags are unique-transcribe's (generated from the option dataclasses); the job flags pick
the launcher and where the results go. Exit status: 0 when every file is ok, 1 when any failed or the job
could not run, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from unique_asr.cli import _Parser, add_option_arguments, check_output_dir, options_from_args
from unique_asr.errors import UniqueASRError

LAUNCHERS = ("auto", "local", "torchrun", "ray")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(  # one-line usage errors, exit 2, as unique-transcribe
        prog="unique-corpus",
        description="Transcribe a corpus (folders, globs or a JSONL manifest) on one process, on every GPU of a "
                    "host (torchrun) or on a Ray cluster; restartable, with a result manifest.")
    parser.add_argument("inputs", nargs="*", help="audio files, folders (recursive) and globs")
    parser.add_argument("--manifest", help="JSONL manifest, one recording a line: path (relative to the manifest), "
                                           "optional id and duration (scripts/prepare_data.py's format)")
    parser.add_argument("--model", default="base", help="tiny.en | base (offline) | a Hugging Face id | a local folder")
    parser.add_argument("--output_dir", "-o", required=True, help="transcripts, the job state (.corpus/) and results")
    parser.add_argument("--output_format", "-f", default="all", help="comma list of txt,srt,vtt,tsv,json, or all")
    parser.add_argument("--results", help="result manifest path (default: <output_dir>/results.jsonl)")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="auto",
                        help="auto: torchrun when started by torchrun, else local (one process)")
    parser.add_argument("--retry_failed", action="store_true", help="transcribe files that failed in an earlier run again")
    parser.add_argument("--max_attempts", type=int, default=3,
                        help="a file whose worker died this many times inside it is recorded as failed")
    parser.add_argument("--ray_address", default=None, help="Ray cluster address (auto, ray://host:10001); default: a local one")
    parser.add_argument("--workers", type=int, default=None, help="Ray actors (default: one per GPU, else per CPU)")
    parser.add_argument("--gpus_per_worker", type=float, default=None,
                        help="GPUs per Ray actor (default 1 on a GPU cluster; 0.5 puts two on a GPU)")
    parser.add_argument("--cpus_per_worker", type=float, default=1.0, help="CPUs per Ray actor (also its torch threads)")
    parser.add_argument("--progress_interval", type=float, default=1.0, help="seconds between progress updates")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    add_option_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from unique_asr.corpus.job import finish, plan, run_local
    from unique_asr.models.registry import resolve as resolve_model
    from unique_asr.corpus.torchrun import run_torchrun, under_torchrun
    from unique_asr.corpus.work import JobSpec
    from unique_asr.writers import parse_formats

    try:
        if not args.inputs and not args.manifest:
            raise ValueError("give audio files, folders, globs or --manifest")
        if args.max_attempts < 1:
            raise ValueError(f"--max_attempts must be >= 1, got {args.max_attempts}")
        options = options_from_args(args)
        resolve_model(args.model)  # an unknown name is a bad option value: exit 2 before any loading
        output_dir = Path(args.output_dir)
        check_output_dir(output_dir)
        spec = JobSpec(args.model, options, output_dir, parse_formats(args.output_format),
                       max_attempts=args.max_attempts, retry_failed=args.retry_failed)
    except (ValueError, UniqueASRError) as exc:
        print(f"unique-corpus: error: {exc}", file=sys.stderr)
        return 2
    results = Path(args.results) if args.results else output_dir / "results.jsonl"
    launcher = args.launcher if args.launcher != "auto" else ("torchrun" if under_torchrun() else "local")

    def make_plan():
        return plan(spec, args.inputs, args.manifest)

    try:
        if launcher == "torchrun":
            return run_torchrun(spec, make_plan, results, quiet=args.quiet, interval=args.progress_interval)
        job = make_plan()
        if launcher == "ray":
            from unique_asr.corpus.ray_launcher import run_ray

            return run_ray(spec, job, results, address=args.ray_address, workers=args.workers,
                           gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker,
                           max_retries=args.max_attempts - 1, quiet=args.quiet, interval=args.progress_interval)
        run_local(spec, job, quiet=args.quiet, interval=args.progress_interval)
        return finish(spec, job, results, quiet=args.quiet).status
    except KeyboardInterrupt:
        print("unique-corpus: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    except ValueError as exc:  # an option the loaded model cannot honour (checked before the first file)
        print(f"unique-corpus: error: {exc}", file=sys.stderr)
        return 2
    except UniqueASRError as exc:
        print(f"unique-corpus: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
