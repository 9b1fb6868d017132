"""Where the CPU time of a transcription goes: wall time per stage (audio + VAD, log-mel, encoder, cross-memory
projection, decoder steps, language detection, the rest of the token loop) and torch's top operators.

    python scripts/profile_cpu.py --model base --dtype float32 --threads 2 AUDIO

Stages are timed by wrapping the functions that run them (perf_counter around each call; nested calls are
subtracted from their caller), so their sum is the transcription's wall time; the operator table is
torch.profiler's self CPU time over the whole run.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections import defaultdict

import torch

import unique_asr
from unique_asr import decoding, transcribe, vad
from unique_asr.models import whisper

TOTALS: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)
_stack: list[list[float]] = []


def timed(name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _stack.append([0.0])
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent = time.perf_counter() - started
            inner = _stack.pop()[0]
            TOTALS[name] += spent - inner
            CALLS[name] += 1
            if _stack:
                _stack[-1][0] += spent
    return wrapper


def instrument() -> None:
    vad.VadModel.probs = timed("VAD", vad.VadModel.probs)
    transcribe.LogMel.__call__ = timed("log-mel", transcribe.LogMel.__call__)
    whisper.WhisperModel.encode = timed("encoder", whisper.WhisperModel.encode)
    whisper.WhisperModel.cross_memory = timed("cross K/V projection", whisper.WhisperModel.cross_memory)
    whisper.WhisperModel.step = timed("decoder step (forward)", whisper.WhisperModel.step)
    decoding.detect_language = timed("language detection", decoding.detect_language)
    transcribe.decode_batch = timed("token loop (search, filters, guard)", transcribe.decode_batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio")
    parser.add_argument("--model", default="base")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--beam_size", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--without_timestamps", action="store_true")
    parser.add_argument("--ops", type=int, default=15, help="rows of the operator table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = unique_asr.load_model(args.model, device="cpu", dtype=args.dtype)
    if not hasattr(whisper, "WhisperModel"):
        raise SystemExit("unique_asr.models.whisper.WhisperModel not found")
    for _ in model.transcribe(args.audio, language="en", beam_size=args.beam_size, batch_size=args.batch_size,
                              without_timestamps=args.without_timestamps)[0]:
        pass  # untimed warm-up (VAD model, first-call set-up), as the benchmark's
    instrument()
    started = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        segments, info = model.transcribe(args.audio, language="en", beam_size=args.beam_size,
                                          batch_size=args.batch_size, without_timestamps=args.without_timestamps)
        n = len(list(segments))
        wall = time.perf_counter() - started  # the transcription only, not the profiler's own teardown
    rest = wall - sum(TOTALS.values())
    print(f"{args.model} {args.dtype}, {args.threads} threads, {info.duration_s:.0f} s audio, {info.windows} windows, "
          f"{n} segments: {wall:.1f} s wall (under the profiler)")
    print("| stage | s | % | calls |\n|---|---|---|---|")
    for name, spent in sorted(TOTALS.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {spent:.1f} | {100 * spent / wall:.0f} | {CALLS[name]} |")
    print(f"| other (windows, segments, Python) | {rest:.1f} | {100 * rest / wall:.0f} | |")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.ops))


if __name__ == "__main__":
    main()
