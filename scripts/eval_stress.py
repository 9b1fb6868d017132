"""Score long-form files (the stress set of make_stress_set.py, or the dev long-form files): WER, words in
dropped stretches, reported vs reference coverage, for unique-asr batched and sequential and faster-whisper on
the same bundled weights (CPU, float32, same beam size, Whisper's English normaliser).

A dropped stretch is a run of at least DROP_RUN consecutive reference words that the alignment deletes (a
passage with no text at all, whatever the timestamps say). Rows go to --out (JSONL, appended); the table
printed last pools each arm over the files given.

    python scripts/eval_stress.py outputs/stress/manifest.jsonl --model tiny.en --out outputs/stress/tiny.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

import unique_asr
from unique_asr.config import DecodeOptions, TranscribeOptions
from unique_asr.eval.align import align
from unique_asr.eval.manifest import load_dataset
from unique_asr.eval.normalise import words
from unique_asr.eval.telemetry import overlap_seconds, total_seconds

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu import ct2_folder  # noqa: E402  (the bundled CTranslate2 files, as faster-whisper reads them)

DROP_RUN = 5


def dropped_words(ref: list[str], hyp: list[str]) -> tuple[int, int]:
    """(errors, reference words deleted in runs of >= DROP_RUN) of hyp against ref."""
    alignment = align(ref, hyp)
    dropped = sum(i2 - i1 for tag, i1, i2, _, _ in alignment.edits if tag == "delete" and i2 - i1 >= DROP_RUN)
    counts = alignment.counts
    return counts.substitutions + counts.deletions + counts.insertions, dropped


def parse_set(text: str) -> dict:
    """'k=v,k=v' -> option overrides (TranscribeOptions or DecodeOptions fields), typed like their defaults."""
    out = {}
    for key, value in (kv.split("=", 1) for kv in text.split(",") if kv):
        default = next(getattr(o, key) for o in (TranscribeOptions(), DecodeOptions()) if hasattr(o, key))
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise SystemExit(f"--set {key}: expected true or false, got {value!r}")
            out[key] = value.lower() in ("true", "1")
        else:
            out[key] = type(default)(value)
    return out


def run_ours(model, path: str, strategy: str, beam_size: int, overrides: dict) -> tuple[list, dict]:
    segments, info = model.transcribe(path, strategy=strategy, beam_size=beam_size, **overrides)
    segments = list(segments)
    return [(s.start, s.end, s.text) for s in segments], {
        "vad_speech_s": info.speech_s, "decoded_s": info.decoded_s,
        "uncovered": getattr(info, "uncovered", None), "guard_stops": getattr(info, "guard_stops", None),
        "loops": getattr(info, "loops", None)}


def run_faster_whisper(model, path: str, beam_size: int) -> tuple[list, dict]:
    segments, _ = model.transcribe(path, beam_size=beam_size, vad_filter=True, language="en")
    return [(s.start, s.end, s.text) for s in segments], {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifests", nargs="+")
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--arms", default="batched,sequential,faster-whisper")
    parser.add_argument("--label", default="", help="added to the arm names (e.g. the code version)")
    parser.add_argument("--beam-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--set", default="", help="our options, e.g. speech_pad_ms=400,min_silence_ms=2000")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    overrides = parse_set(args.set)
    torch.set_num_threads(args.threads)
    items = [item for m in args.manifests for item in load_dataset(m)]
    arms = args.arms.split(",")
    runners = {}
    if {"batched", "sequential"} & set(arms):
        ours = unique_asr.load_model(args.model, device="cpu", dtype="float32")
        for strategy in ("batched", "sequential"):
            runners[strategy] = lambda p, s=strategy: run_ours(ours, p, s, args.beam_size, overrides)
    if "faster-whisper" in arms:
        from faster_whisper import WhisperModel

        with tempfile.TemporaryDirectory() as tmp:
            fw = WhisperModel(str(ct2_folder(args.model, Path(tmp))), device="cpu", compute_type="float32",
                              cpu_threads=args.threads)
        runners["faster-whisper"] = lambda p: run_faster_whisper(fw, p, args.beam_size)
    rows = []
    for item in items:
        ref = words(item.text)
        speech = [(s["start"], s["end"]) for s in item.segments] or [(0.0, item.duration)]
        for arm in arms:
            started = time.perf_counter()
            segments, extra = runners[arm](str(item.audio))
            wall = time.perf_counter() - started
            errors, dropped = dropped_words(ref, words(" ".join(t for _, _, t in segments)))
            row = {"arm": arm + args.label, "model": args.model, "id": item.id, "duration": item.duration,
                   "ref_words": len(ref), "errors": errors, "wer": errors / len(ref), "dropped_words": dropped,
                   "ref_coverage": overlap_seconds([(a, b) for a, b, _ in segments], speech) / total_seconds(speech),
                   "wall_s": wall, "rtfx": item.duration / wall, **extra,
                   "set": args.set, "segments": [[round(a, 2), round(b, 2), t] for a, b, t in segments]}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.out:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
    print(f"\n{'arm':24} {'files':>5} {'WER %':>6} {'dropped':>7} {'ref cov %':>9} {'RTFx':>6}")
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = [r for r in rows if r["arm"] == arm]
        wer = sum(r["errors"] for r in mine) / sum(r["ref_words"] for r in mine)
        cov = sum(r["ref_coverage"] * r["duration"] for r in mine) / sum(r["duration"] for r in mine)
        rtfx = sum(r["duration"] for r in mine) / sum(r["wall_s"] for r in mine)
        print(f"{arm:24} {len(mine):5d} {100 * wer:6.2f} {sum(r['dropped_words'] for r in mine):7d} "
              f"{100 * cov:9.1f} {rtfx:6.1f}")


if __name__ == "__main__":
    main()
