"""Where the resident memory of a default end-to-end transcription goes (issue 18), per model.

Each (model, batch size) runs in a fresh process: the first --minutes of a recording (default: the LJ Speech
long-form file of the shared data, 22.05 kHz FLAC) are written to a temporary FLAC, then the process records
its RSS after imports, after loading the model (weights), after loading the VAD, and the peak RSS (sampled
every 5 ms from /proc/self/statm, and ru_maxrss) while the audio front end (decode + VAD + windows), the encoder
(a batch of windows -> encoder states + cross-attention memory) and the token loop run.

    python scripts/bench_memory.py --models tiny.en base --batch-sizes 16 4 --minutes 10
    python scripts/bench_memory.py --models base --windows 16      # stop after the first 16 windows

Prints one JSON line per run and a table last. CPU unless --device says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_AUDIO = ROOT.parent / "shared" / "data" / "ljspeech-lj001-longform" / "audio" / "ljspeech-lj001-longform.flac"


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Sampler:
    """Peak RSS per stage label, sampled every 5 ms in a thread."""

    def __init__(self):
        self.stage, self.peaks, self._stop = "setup", {}, False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop:
            value = rss_mb()
            self.peaks[self.stage] = max(self.peaks.get(self.stage, 0.0), value)
            time.sleep(0.005)

    def stop(self):
        self._stop = True
        self.thread.join()


def child(args) -> dict:
    """One measured run (in a fresh process)."""
    out = {"model": args.model, "batch_size": args.batch_size, "start_mb": rss_mb()}
    import torch  # noqa: F401

    import unique_asr
    import unique_asr.transcribe as tr

    out["imports_mb"] = rss_mb()
    model = unique_asr.load_model(args.model, device=args.device)
    out["weights_mb"] = rss_mb()
    from unique_asr.vad import VadModel

    model._vad = VadModel(model.device)
    out["vad_mb"] = rss_mb()
    sampler = Sampler()
    sampler.stage = "audio+vad"

    def staged(name, fn):
        def wrapper(*a, **k):
            previous, sampler.stage = sampler.stage, name
            try:
                return fn(*a, **k)
            finally:
                sampler.stage = previous
        return wrapper

    tr._Encoder.__call__ = staged("encoder", tr._Encoder.__call__)
    tr.decode_batch = staged("token loop", tr.decode_batch)  # includes the cross-attention memory of the batch
    started = time.perf_counter()
    segments, info = model.transcribe(args.audio, batch_size=args.batch_size)
    n = 0
    for _ in segments:
        n += 1
        if args.windows and info.windows >= args.windows:
            break
    out["wall_s"] = round(time.perf_counter() - started, 1)
    sampler.stop()
    out["windows"] = info.windows
    out["peaks_mb"] = {k: round(v) for k, v in sampler.peaks.items()}
    out["peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    for key in ("start_mb", "imports_mb", "weights_mb", "vad_mb"):
        out[key] = round(out[key])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny.en", "base"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[16])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--audio", default=str(DEFAULT_AUDIO))
    parser.add_argument("--windows", type=int, default=0, help="stop after this many windows (0: the whole file)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return
    import soundfile as sf

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "clip.flac"
        with sf.SoundFile(args.audio) as f:
            data = f.read(int(args.minutes * 60 * f.samplerate), dtype="float32")
            sf.write(path, data, f.samplerate)
        for model in args.models:
            for batch in args.batch_sizes:
                cmd = [sys.executable, __file__, "--child", "--model", model, "--batch-size", str(batch),
                       "--audio", str(path), "--windows", str(args.windows), "--device", args.device]
                done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
                line = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
                if done.returncode or not line:
                    print(done.stderr[-2000:], file=sys.stderr)
                    continue
                print(line[-1], flush=True)
                rows.append(json.loads(line[-1]))
    print(f"\n{args.minutes:g} min of {pathlib.Path(args.audio).name}, device {args.device}; RSS in MB")
    print("| model | batch | imports | + weights | + VAD | peak audio+VAD | peak encoder | peak token loop | peak (ru_maxrss) | windows | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        p = r["peaks_mb"]
        print(f"| {r['model']} | {r['batch_size']} | {r['imports_mb']} | {r['weights_mb']} | {r['vad_mb']} | "
              f"{p.get('audio+vad', '-')} | {p.get('encoder', '-')} | {p.get('token loop', '-')} | {r['peak_mb']} | "
              f"{r['windows']} | {r['wall_s']} |")


if __name__ == "__main__":
    main()
