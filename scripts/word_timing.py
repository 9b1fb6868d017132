"""Word-timing error of --word_timestamps against recorded word times (tests/data/speech, LibriVox clips with
forced-alignment word times), per strategy: median and p95 of |start - ref| and |end - ref|.

    python scripts/word_timing.py --model tiny.en
    python scripts/word_timing.py --model tiny.en --longform ../shared/data/ljspeech-lj001-longform/manifest.jsonl

--longform: a long-form manifest whose item has per-utterance `segments` (start, end, text): the first word
of every utterance is compared with the utterance start and the last word with its end (the clip edges hold
LJ Speech's own leading/trailing silence, so this error includes that silence: an upper bound).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from speech_data import AUSTEN, joined  # noqa: E402

import unique_asr  # noqa: E402
from unique_asr.word_errors import timing_errors  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--strategies", default="batched,sequential")
    parser.add_argument("--longform", default=None)
    args = parser.parse_args()
    model = unique_asr.load_model(args.model, device="cpu")
    if args.longform:
        return longform(model, args)
    audio, utterances = joined(AUSTEN, gap_s=1.0, lead_s=0.5)
    reference = [w for u in utterances for w in u.words]
    print(f"| model | strategy | words matched | start median | start p95 | end median | end p95 |")
    print("|---|---|---|---|---|---|---|")
    for strategy in args.strategies.split(","):
        segments, _ = model.transcribe(audio, word_timestamps=True, strategy=strategy)
        words = [w for s in segments for w in s.words]
        starts, ends = timing_errors(words, reference)
        print(f"| {args.model} | {strategy} | {len(starts)}/{len(reference)} | {np.median(starts):.3f} s | "
              f"{np.percentile(starts, 95):.3f} s | {np.median(ends):.3f} s | {np.percentile(ends, 95):.3f} s |")


def longform(model, args) -> None:
    import json
    import re

    item = json.loads(Path(args.longform).read_text().splitlines()[0])
    audio = Path(args.longform).parent / item["path"] if "path" in item else None
    norm = lambda w: re.sub(r"[^a-z0-9']", "", w.lower())  # noqa: E731
    print("| model | strategy | utterances | first-word start error median | p95 | last-word end error median | p95 |")
    print("|---|---|---|---|---|---|---|")
    for strategy in args.strategies.split(","):
        segments, _ = model.transcribe(str(audio), word_timestamps=True, strategy=strategy)
        words = [w for s in segments for w in s.words]
        starts, ends = [], []
        for u in item["segments"]:
            ref = u["text"].split()
            first, last = norm(ref[0]), norm(ref[-1])
            near = [w for w in words if abs(w.start - u["start"]) < 2.0 and norm(w.word) == first]
            if near:
                starts.append(min(abs(w.start - u["start"]) for w in near))
            near = [w for w in words if abs(w.end - u["end"]) < 2.0 and norm(w.word) == last]
            if near:
                ends.append(min(abs(w.end - u["end"]) for w in near))
        print(f"| {args.model} | {strategy} | {len(starts)}+{len(ends)} of {len(item['segments'])} | "
              f"{np.median(starts):.3f} s | {np.percentile(starts, 95):.3f} s | {np.median(ends):.3f} s | "
              f"{np.percentile(ends, 95):.3f} s |", flush=True)


if __name__ == "__main__":
    main()
