"""Word-timing error of --word_timestamps against recorded word times (tests/data/speech, LibriVox clips with
forced-alignment word times), per strategy: median and p95 of |start - ref| and |end - ref|.

    python scripts/word_timing.py --model tiny.en
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
    args = parser.parse_args()
    model = unique_asr.load_model(args.model, device="cpu")
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


if __name__ == "__main__":
    main()
