"""Peak memory of the audio front end (decode -> VAD -> windows, no ASR model) vs recording length.

Synthesises long 16 kHz FLAC files by looping samples/lecture.flac (written block by block, so making a
10 h file needs no more memory than reading one), then measures each (length, mode) in a fresh process:
RSS after imports and VAD load ("base"), peak RSS (getrusage ru_maxrss) and wall time.

    python scripts/bench_audio_memory.py --minutes 10 600 --modes stream windows
    python scripts/bench_audio_memory.py --minutes 600 --modes stream   # decode + resample only
    python scripts/bench_audio_memory.py --files ../shared/data/ljspeech-lj001-longform/audio/*.flac --modes windows

modes: stream = audio.stream() only; windows = stream + Silero VAD + iter_windows (what transcribe runs
before the model). --threads sets torch's thread count (default: torch's own); VadModel.probs runs on
one thread regardless, as transcribe does.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_long_file(path: pathlib.Path, seconds: float, source: pathlib.Path) -> None:
    """Loop `source` into a `seconds`-long 16 kHz mono FLAC, one loop at a time."""
    import soundfile as sf

    from unique_asr.audio import SAMPLE_RATE, load

    loop = load(source)
    left = round(seconds * SAMPLE_RATE)
    with sf.SoundFile(path, "w", SAMPLE_RATE, 1, format="FLAC", subtype="PCM_16") as f:
        while left > 0:
            f.write(loop[:left])
            left -= min(left, len(loop))


def measure(mode: str, path: str, threads: int, vad_device: str = "cpu") -> dict:
    """Run one mode over `path` in this process and report memory and time."""
    import torch

    from unique_asr.audio import stream
    from unique_asr.config import TranscribeOptions
    from unique_asr.vad import VadModel
    from unique_asr.windows import iter_windows

    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    vad = VadModel(vad_device) if mode == "windows" else None
    base = rss_mb()
    t0 = time.perf_counter()
    result: dict = {"mode": mode, "threads": threads, "vad_device": vad_device}
    if mode == "stream":
        samples = sum(len(block) for block in stream(path))
        result["audio_s"] = samples / 16000
    else:
        it = iter_windows(path, TranscribeOptions(), vad)
        result["windows"] = sum(1 for _ in it)
        result.update(audio_s=it.duration_s, speech_s=round(it.speech_s, 1), peak_buffer_s=it.peak_buffer_s)
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result.update(base_rss_mb=round(base, 1), peak_rss_mb=round(peak, 1), growth_mb=round(peak - base, 1),
                  elapsed_s=round(elapsed, 2), x_realtime=round(result["audio_s"] / elapsed, 1))
    return result


def run_child(mode: str, path: pathlib.Path, threads: int, vad_device: str) -> dict:
    """`measure` in a fresh Python process (so peak RSS is this run's alone)."""
    cmd = [sys.executable, __file__, "--threads", str(threads), "--vad-device", vad_device, "--child", mode, str(path)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10, 600])
    parser.add_argument("--modes", nargs="+", default=["stream", "windows"], choices=["stream", "windows"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--tmp", type=pathlib.Path, default=pathlib.Path("/tmp"))
    parser.add_argument("--source", type=pathlib.Path, default=ROOT / "samples" / "lecture.flac")
    parser.add_argument("--keep", action="store_true", help="keep the synthesised files")
    parser.add_argument("--files", nargs="+", type=pathlib.Path, help="measure these recordings instead")
    parser.add_argument("--vad-device", default="cpu", help="where the VAD's conv front runs (cpu, cuda)")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1], args.threads, args.vad_device)))
        return
    for path in args.files or ():
        for mode in args.modes:
            print(json.dumps({"file": path.name, **run_child(mode, path, args.threads, args.vad_device)}), flush=True)
    for minutes in () if args.files else args.minutes:
        path = args.tmp / f"unique_asr_bench_{minutes:g}min.flac"
        t0 = time.perf_counter()
        make_long_file(path, minutes * 60, args.source)
        size_mib, took = path.stat().st_size / 2**20, time.perf_counter() - t0
        print(f"# {path.name}: {size_mib:.0f} MiB, written in {took:.0f} s", flush=True)
        try:
            for mode in args.modes:
                print(json.dumps({"minutes": minutes, **run_child(mode, path, args.threads, args.vad_device)}), flush=True)
        finally:
            if not args.keep:
                path.unlink()


if __name__ == "__main__":
    main()
