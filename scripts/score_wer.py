"""Score result manifests from scripts/eval_wer.py (no model, no GPU, no torch) and write a report.

    python scripts/score_wer.py outputs/eval/**/*.jsonl --report-dir outputs/report
    python scripts/score_wer.py run.jsonl --entities entities.jsonl --normaliser whisper_basic
    python scripts/score_wer.py run.jsonl --html outputs/report/transcripts.html   # word diffs + audio viewer

Prints one summary line per manifest; writes report.md, wer_vs_budget.png, rtfx_vs_budget.png and
scores.json (corpus numbers per manifest) into --report-dir.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from unique_asr.errors import UniqueASRError
from unique_asr.eval.entities import load_entities
from unique_asr.eval.html_report import write_html_report
from unique_asr.eval.metrics import ManifestScore, score_manifest
from unique_asr.eval.normalise import NORMALISERS
from unique_asr.eval.report import label, write_report
from unique_asr.eval.telemetry import LOOP_LENGTH_RATIO, LOOP_MIN_REPEATS, LOOP_NGRAM


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("manifests", nargs="+", type=Path, help="result manifests (JSONL) written by eval_wer.py")
    p.add_argument(
        "--report-dir", type=Path, default=Path("outputs/report"), help="where report and plots go"
    )
    p.add_argument(
        "--normaliser",
        choices=sorted(NORMALISERS),
        default=None,
        help="normaliser for both sides (default: the one each manifest records)",
    )
    p.add_argument(
        "--entities",
        type=Path,
        default=None,
        help='JSONL {"id", "entities": [...]} (a prepared dataset manifest works); default: each line\'s own',
    )
    p.add_argument(
        "--html",
        type=Path,
        default=None,
        help="also write a self-contained HTML report: colour-coded word diff per file and a transcript viewer "
        "that plays the audio and highlights the current segment or word",
    )
    p.add_argument(
        "--embed-audio-mb",
        type=float,
        default=0.0,
        help="with --html: embed audio files up to this size in the page (default: link them by relative path)",
    )
    p.add_argument("--loop-ngram", type=int, default=LOOP_NGRAM, help="n of the repetition telemetry")
    p.add_argument(
        "--loop-repeats",
        type=int,
        default=LOOP_MIN_REPEATS,
        help="flag a loop when a hypothesis n-gram occurs this many times more than in the reference",
    )
    p.add_argument(
        "--loop-length-ratio",
        type=float,
        default=LOOP_LENGTH_RATIO,
        help="flag a loop when the hypothesis has this many times the reference's words",
    )
    return p.parse_args(argv)


def _summary(score: ManifestScore) -> dict:
    """Corpus numbers of one manifest (nan -> None, so the JSON stays standard)."""
    c = score.corpus
    row = {
        "manifest": str(score.path),
        "run": score.run,
        "normaliser": score.normaliser,
        "files": c.files,
        "wer": c.wer,
        "cer": c.cer,
        "substitutions": c.words.substitutions,
        "deletions": c.words.deletions,
        "insertions": c.words.insertions,
        "reference_words": c.words.reference_length,
        "entity_error_rate": c.entity_error_rate,
        "entities": c.entities_total,
        "loops": c.loops,
        "repeated_ngrams": c.repeated_ngrams,
        "insertion_rate": c.insertion_rate,
        "coverage": c.coverage,
        "decoded_share": c.decoded_share,
        "duration_s": c.duration,
        "wall_s": c.wall_s,
        "rtfx": c.rtfx,
    }
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        entities = load_entities(args.entities) if args.entities else None
        loop = {
            "n": args.loop_ngram,
            "min_repeats": args.loop_repeats,
            "max_length_ratio": args.loop_length_ratio,
        }
        scores = [score_manifest(m, args.normaliser, entities, **loop) for m in args.manifests]
        report = write_report(scores, args.report_dir)
        summaries = [_summary(s) for s in scores]
        (args.report_dir / "scores.json").write_text(json.dumps(summaries, indent=1), encoding="utf-8")
        if args.html is not None:
            html = write_html_report(args.manifests, args.html, args.normaliser, int(args.embed_audio_mb * 2**20))
    except (UniqueASRError, OSError) as exc:
        print(f"score_wer: error: {exc}", file=sys.stderr)
        return 1
    for s in scores:
        c = s.corpus
        print(
            f"{label(s)}: WER {100 * c.wer:.2f} % (S {c.words.substitutions} D {c.words.deletions} "
            f"I {c.words.insertions} of {c.words.reference_length}), CER {100 * c.cer:.2f} %, "
            f"loops {c.loops}, RTFx {c.rtfx:.1f}  [{s.normaliser}]"
        )
    print(f"report: {report}")
    if args.html is not None:
        print(f"html: {html}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
