"""Corpus-job overhead and GPU sharing: the plain CLI vs unique-corpus (1 process) vs torchrun with N processes
on the same device, over the same files, each arm a fresh process (start-up and model load included).

    python scripts/bench_corpus.py --model tiny.en --files 80 --seconds 90 --procs 2 4 --out $OUT/bench_corpus.json

The corpus is real recorded speech (tests/data/speech clips joined in a seeded random order with 0.3-1.5 s
gaps, 16 kHz FLAC) unless --inputs names files. Per arm: wall seconds of the whole process, RTFx (audio /
wall), the ratio to the CLI's wall, the sum of per-file wall times (the CLI's per-file lines, the corpus
job's result manifest) and the mean GPU utilisation sampled by nvidia-smi while the arm ran. Torchrun arms
give each rank cores/N threads (torchrun's own default is 1). The transcripts of the arms are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT / "tests" / "data" / "speech"
RATE = 16000


def build_corpus(folder: Path, files: int, seconds: float, seed: int = 0) -> float:
    """`files` recordings of about `seconds` each from the shipped clips; returns the total audio seconds."""
    clips = [sf.read(p, dtype="float32")[0] for p in sorted(SPEECH.glob("*.flac"))]
    rng = random.Random(seed)
    total = 0.0
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        parts, length = [], 0
        while length < seconds * RATE:
            gap = np.zeros(int(rng.uniform(0.3, 1.5) * RATE), np.float32)
            piece = clips[rng.randrange(len(clips))]
            parts += [gap, piece]
            length += len(gap) + len(piece)
        audio = np.concatenate(parts)
        sf.write(folder / f"rec{i:04d}.flac", audio, RATE)
        total += len(audio) / RATE
    return total


class GpuSampler:
    """nvidia-smi utilisation samples (every 100 ms) with host timestamps; empty without nvidia-smi."""

    def __init__(self):
        self.samples: list[tuple[float, float]] = []
        exe = shutil.which("nvidia-smi")
        self.proc = None
        if exe:
            self.proc = subprocess.Popen([exe, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                          "-lms", "100"], stdout=subprocess.PIPE, text=True)
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.samples.append((time.time(), float(line.split(",")[0])))
            except ValueError:
                pass

    def mean(self, start: float, end: float) -> float | None:
        values = [u for t, u in self.samples if start <= t <= end]
        return round(sum(values) / len(values), 1) if values else None

    def stop(self):
        if self.proc:
            self.proc.terminate()


def per_file_walls(arm: str, out: Path, stderr: str) -> float:
    if arm == "cli":
        return sum(float(w) for w in re.findall(r" s audio in ([\d.]+) s \(RTFx", stderr))
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return sum(r.get("wall_s") or 0.0 for r in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--inputs", nargs="*", help="existing audio files/folders (default: a synthesised corpus)")
    p.add_argument("--files", type=int, default=80)
    p.add_argument("--seconds", type=float, default=90.0)
    p.add_argument("--procs", type=int, nargs="*", default=[2], help="torchrun arms: processes on the one device")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more transcription flags for every arm")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench_corpus_"))
    if args.inputs:
        inputs = args.inputs
        audio_s = None
    else:
        audio_s = build_corpus(work / "corpus", args.files, args.seconds)
        inputs = [str(work / "corpus")]
    bindir = Path(sys.executable).parent
    common = ["--model", args.model, *args.extra]
    cores = os.cpu_count() or 1
    arms = [("cli", [str(bindir / "unique-transcribe"), *inputs, *common], None),
            ("corpus-1", [str(bindir / "unique-corpus"), *inputs, *common, "--quiet"], None)]
    for n in args.procs:
        arms.append((f"torchrun-{n}", [str(bindir / "torchrun"), "--standalone", "--nproc_per_node", str(n), "-m",
                                       "unique_asr.corpus", *inputs, *common, "--quiet"], max(1, cores // n)))
    # untimed warm-up: model conversion cache, kernel caches
    first = sorted(Path(inputs[0]).glob("*.flac"))[:1] if Path(inputs[0]).is_dir() else inputs[:1]
    subprocess.run([str(bindir / "unique-transcribe"), *map(str, first), *common, "--quiet", "-o", str(work / "warm")],
                   check=True)
    sampler = GpuSampler()
    records = []
    try:
        for name, cmd, threads in arms:
            out = work / name
            env = dict(os.environ)
            if threads:
                env["OMP_NUM_THREADS"] = str(threads)
            start = time.time()
            t0 = time.perf_counter()
            proc = subprocess.run([*cmd, "--output_dir", str(out)], env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{name} failed with exit status {proc.returncode}")
            if audio_s is None:
                audio_s = sum(r["duration_s"] for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())
                              ) if name != "cli" else None
            records.append({"arm": name, "wall_s": round(wall, 2), "per_file_wall_s": round(per_file_walls(name, out, proc.stderr), 2),
                            "gpu_util_mean": sampler.mean(start, time.time()), "threads_per_process": threads})
            print(json.dumps(records[-1]), flush=True)  # a run cut short keeps what it measured
    finally:
        sampler.stop()
    base = records[0]["wall_s"]
    reference = {p.name: p.read_text() for p in (work / "cli").glob("*.txt")}
    for r in records:
        r["audio_s"] = round(audio_s, 1) if audio_s else None
        r["rtfx"] = round(audio_s / r["wall_s"], 1) if audio_s else None
        r["vs_cli"] = round(base / r["wall_s"], 3)
        texts = {p.name: p.read_text() for p in (work / r["arm"]).rglob("*.txt")}
        r["same_text_as_cli"] = sum(texts.get(k) == v for k, v in reference.items())
        r["files"] = len(reference)
    header = {"model": args.model, "files": args.files, "seconds": args.seconds, "extra": args.extra,
              "cores": cores, "device": _device()}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"run": header, "arms": records}, indent=1) + "\n")
    print(json.dumps(header))
    print(f"{'arm':<12} {'wall s':>8} {'RTFx':>8} {'vs CLI':>7} {'per-file s':>10} {'GPU %':>6} {'same txt':>9}")
    for r in records:
        print(f"{r['arm']:<12} {r['wall_s']:>8.2f} {r['rtfx'] or 0:>8.1f} {r['vs_cli']:>7.3f} {r['per_file_wall_s']:>10.2f} "
              f"{r['gpu_util_mean'] if r['gpu_util_mean'] is not None else '-':>6} {r['same_text_as_cli']:>4}/{r['files']}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def _device() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return "cpu"


if __name__ == "__main__":
    raise SystemExit(main())
