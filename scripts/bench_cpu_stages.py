"""Our encoder and token loop vs CTranslate2's (faster-whisper's) on the same windows, weights and threads.

    OMP_WAIT_POLICY=PASSIVE python scripts/bench_cpu_stages.py AUDIO --compute_type int8 --threads 2

The audio's first --seconds are cut into 30 s windows (the last one shorter, zero-padded as both pipelines do),
turned into one log-mel batch, and timed in alternated rounds after one warm-up call of each arm:
encoder (ours `WhisperModel.encode`, theirs `ctranslate2.models.Whisper.encode`) and token loop (ours
`decode_batch`, theirs `generate`; greedy or --beam_size, English, with timestamp tokens, suppress_blank and the
non-speech suppression on both sides). Prints wall and process CPU seconds per round, tokens per window, and
the ratios of medians (>1: ours faster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_cpu import ct2_folder

import unique_asr
from unique_asr.config import DecodeOptions
from unique_asr.decoding import decode_batch
from unique_asr.transcribe import _Encoder

WINDOW = 480_000  # 30 s at 16 kHz


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio", help="16 kHz mono audio file")
    parser.add_argument("--model", default="base")
    parser.add_argument("--compute_type", default="int8", choices=["float32", "int8"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--beam_size", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=63.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import ctranslate2
    from faster_whisper import WhisperModel

    torch.set_num_threads(args.threads)
    loaded = unique_asr.load_model(args.model, device="cpu", dtype=args.compute_type)
    ours, tokenizer = loaded.bundle.model, loaded.bundle.tokenizer
    with tempfile.TemporaryDirectory() as tmp:
        theirs = WhisperModel(str(ct2_folder(args.model, Path(tmp))), device="cpu",
                              compute_type=args.compute_type, cpu_threads=args.threads).model
    audio, rate = sf.read(args.audio, dtype="float32", frames=int(args.seconds * 16000))
    if rate != 16000 or audio.ndim != 1:
        raise SystemExit("expected 16 kHz mono audio")
    pieces = [torch.as_tensor(audio[i : i + WINDOW]) for i in range(0, len(audio), WINDOW)]
    with torch.inference_mode():
        mel = _Encoder(ours).mel(torch.stack([torch.nn.functional.pad(p, (0, WINDOW - len(p))) for p in pieces]))
    mel_ct2 = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.numpy()))
    options = DecodeOptions(language="en", beam_size=args.beam_size, temperatures=(0.0,))
    prompt = tokenizer.sot_sequence("en", "transcribe", timestamps=True)

    def encode_ours():
        with torch.inference_mode():
            return ours.encode(mel)

    features, memory = encode_ours(), theirs.encode(mel_ct2)
    arms = {
        "encoder ours": encode_ours,
        "encoder ct2": lambda: theirs.encode(mel_ct2),
        "token loop ours": lambda: [r.tokens for r in decode_batch(ours, tokenizer, features, options)],
        "token loop ct2": lambda: [r.sequences_ids[0] for r in theirs.generate(
            memory, [list(prompt)] * len(pieces), beam_size=args.beam_size, max_length=448,
            suppress_blank=True, suppress_tokens=[-1])],
    }
    tokens = {arm: fn() for arm, fn in arms.items()}  # warm-up
    walls = {arm: [] for arm in arms}
    cpus = {arm: [] for arm in arms}
    for _ in range(args.rounds):
        for arm, fn in arms.items():
            started, cpu = time.perf_counter(), time.process_time()
            tokens[arm] = fn()
            walls[arm].append(time.perf_counter() - started)
            cpus[arm].append(time.process_time() - cpu)
    print(f"{args.model} {args.compute_type}, beam {args.beam_size}, {args.threads} threads, {len(pieces)} windows, "
          f"load {os.getloadavg()[0]:.1f}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    for arm in arms:
        print(f"{arm:16} wall {' '.join(f'{w:.2f}' for w in walls[arm])}  cpu {' '.join(f'{c:.2f}' for c in cpus[arm])}")
    for stage in ("encoder", "token loop"):
        a, b = f"{stage} ours", f"{stage} ct2"
        print(f"{stage}: ours {statistics.median(walls[b]) / statistics.median(walls[a]):.2f}x ct2's speed (wall), "
              f"{statistics.median(cpus[b]) / statistics.median(cpus[a]):.2f}x (cpu)")
    print("tokens per window, ours", [len(t) for t in tokens["token loop ours"]],
          "ct2", [len(t) for t in tokens["token loop ct2"]])


if __name__ == "__main__":
    main()
