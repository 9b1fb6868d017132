"""Time batched transcription of long-form files with whichever unique_asr is first on sys.path, for
before/after comparisons of two trees in alternated rounds (one process per arm and round):

    (cd /tmp/before && PYTHONPATH=/tmp/before python /path/to/scripts/time_batched.py tiny.en before 1 manifest.jsonl)

One JSON line per file: wall and process CPU seconds of `transcribe` (model load excluded), RTFx of both,
WER (Whisper normaliser), window count, and the unique_asr package that ran (to check which tree it was).
"""

from __future__ import annotations

import json
import sys
import time

import torch

import unique_asr
from unique_asr.eval.align import align
from unique_asr.eval.manifest import load_dataset
from unique_asr.eval.normalise import words


def main() -> None:
    if len(sys.argv) < 5:
        sys.exit("usage: time_batched.py MODEL LABEL ROUND MANIFEST...")
    model_name, label, round_ = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(2)
    model = unique_asr.load_model(model_name, device="cpu", dtype="float32")
    for manifest in sys.argv[4:]:
        for item in load_dataset(manifest):
            wall0, cpu0 = time.perf_counter(), time.process_time()
            segments, info = model.transcribe(str(item.audio), strategy="batched")
            segments = list(segments)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            counts = align(words(item.text), words(" ".join(s.text for s in segments))).counts
            print(json.dumps({"label": label, "round": round_, "model": model_name, "id": item.id, "wall_s": wall,
                              "cpu_s": cpu, "rtfx": item.duration / wall, "cpu_rtfx": item.duration / cpu,
                              "wer": counts.error_rate, "windows": info.windows,
                              "unique_asr": unique_asr.__file__}), flush=True)


if __name__ == "__main__":
    main()
