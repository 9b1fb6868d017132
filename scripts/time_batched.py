"""Time batched transcription of long-form files with whichever unique_asr is first on sys.path, for
before/after comparisons of two trees in alternated rounds (one process per arm and round):

    (cd /tmp/before && PYTHONPATH=/tmp/before python /path/to/scripts/time_batched.py tiny.en before 1 manifest.jsonl)
    python scripts/time_batched.py MODEL_OR_FOLDER after 1 manifest.jsonl --device cuda --warmup

One JSON line per file: wall and process CPU seconds of `transcribe` (model load excluded; on CUDA the clock
stops after a device synchronise), RTFx of both, WER (Whisper normaliser; without the eval extra, the text to score elsewhere), window count, and the unique_asr
package that ran (to check which tree it was). --warmup first transcribes the first WARMUP_S seconds of the first file once, untimed
(CUDA graphs, Triton compiles, allocator), so the timed rounds measure the steady state.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import unique_asr
from unique_asr.audio import SAMPLE_RATE, load
from unique_asr.eval.manifest import load_dataset

try:  # the [eval] extra (rapidfuzz, whisper-normalizer); without it (a bare GPU machine) the text is recorded
    from unique_asr.eval.align import align
    from unique_asr.eval.normalise import words
except ImportError:
    align = None

WARMUP_S = 90  # --warmup: seconds of the first file transcribed once, untimed (3-4 windows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("label")
    parser.add_argument("round", type=int)
    parser.add_argument("manifests", nargs="+")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="default: float32 on cpu, the model's auto dtype elsewhere")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = args.dtype or ("float32" if args.device == "cpu" else "auto")
    model = unique_asr.load_model(args.model, device=args.device, dtype=dtype)
    items = [item for manifest in args.manifests for item in load_dataset(manifest)]
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    if args.warmup and items:
        first = load(str(items[0].audio))[: WARMUP_S * SAMPLE_RATE]
        list(model.transcribe(first, strategy="batched")[0])
    for item in items:
        sync()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        segments, info = model.transcribe(str(item.audio), strategy="batched")
        segments = list(segments)
        sync()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        text = " ".join(s.text for s in segments)
        score = {"wer": align(words(item.text), words(text)).counts.error_rate} if align else {"text": text}
        print(json.dumps({"label": args.label, "round": args.round, "model": args.model, "id": item.id,
                          "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
                          "dtype": dtype, "wall_s": wall, "cpu_s": cpu, "rtfx": item.duration / wall,
                          "cpu_rtfx": item.duration / cpu, **score, "windows": info.windows,
                          "unique_asr": unique_asr.__file__}), flush=True)


if __name__ == "__main__":
    main()
