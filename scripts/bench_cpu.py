"""CPU speed anchor: unique-asr vs faster-whisper (CTranslate2) on the same weights, audio and beam size.

Both arms load the bundled CTranslate2 files of the same model (ours converts them; faster-whisper reads them
as they are), run alternately for several rounds on the same files with the same thread count, and are
scored with the same normaliser. faster-whisper is a benchmark-only dependency (`pip install faster-whisper`).

    python scripts/bench_cpu.py --model base --strategy batched --rounds 3 --compute_type int8 \
        ../shared/data/librispeech-test-other-dev-longform/manifest.jsonl --out benchmarks/cpu_base.json

--compute_type is both arms' (ours: TranscribeOptions.dtype, whose alias it is; faster-whisper: its
compute_type), float32 or int8. --crop_s S benchmarks each long-form item cut after the last of its
utterances (manifest `segments`) that ends within S seconds, the reference being those utterances' text.
Each arm first transcribes the first item once, untimed. Both arms run in one process, so one OpenMP setting (OMP_WAIT_POLICY, read by torch's and CTranslate2's
libgomp at load) holds for both; the printed table says which.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

import unique_asr
from unique_asr.eval.align import align
from unique_asr.eval.manifest import load_dataset
from unique_asr.eval.normalise import words
from unique_asr.models.registry import BUNDLED


def ct2_folder(model: str, into: Path) -> Path:
    """The bundled CTranslate2 model as one folder (model.bin parts joined) for faster-whisper."""
    bundled = BUNDLED[model]
    source = Path(bundled.tokenizer.locate()).parent
    for name in os.listdir(source):
        if name.startswith(("config", "tokenizer", "vocabulary", "preprocessor")):
            shutil.copy(source / name, into / name)
    with open(into / "model.bin", "wb") as out:
        for part in bundled.weights:
            with open(part.locate(), "rb") as f:
                shutil.copyfileobj(f, out)
    return into


def crop(manifest: str, seconds: float, into: Path):
    """The manifest's first item cut after its last utterance ending within `seconds` (a 16 kHz wav in
    `into`), as a dataset item whose text is those utterances'."""
    import soundfile as sf

    from unique_asr.eval.manifest import load_dataset as load
    from unique_asr.jsonl import read_jsonl

    row = next(iter(read_jsonl(manifest)))
    kept = [u for u in row["segments"] if u["end"] <= seconds]
    end = kept[-1]["end"]
    item = load(manifest)[0]
    audio, rate = sf.read(str(item.audio), dtype="float32", frames=int(end * row.get("sample_rate", 16000)))
    path = into / f"{row['id']}-{end:.0f}s.wav"
    sf.write(str(path), audio, rate)
    return replace(item, audio=path, duration=len(audio) / rate, text=" ".join(u["text"] for u in kept))


def conditioned(args) -> bool:
    """condition_on_previous_text for both arms. auto: as faster-whisper does it, i.e. off in batched mode (its
    BatchedInferencePipeline has no previous text; ours then decodes independent windows, the same task) and
    on in sequential mode. In batched mode ours conditions only with stripes (TranscribeOptions.stripe_windows,
    off by default), which this script does not turn on."""
    if args.condition_on_previous_text == "auto":
        return args.strategy == "sequential"
    return args.condition_on_previous_text == "true"


def run_ours(model, path: str, args) -> str:
    segments, _ = model.transcribe(path, strategy=args.strategy, beam_size=args.beam_size,
                                   batch_size=args.batch_size, language="en", threads=args.threads,
                                   without_timestamps=args.without_timestamps,
                                   condition_on_previous_text=conditioned(args))
    return " ".join(s.text for s in segments)


def run_faster_whisper(model, pipeline, path: str, args) -> str:
    if args.strategy == "batched":
        segments, _ = pipeline.transcribe(path, beam_size=args.beam_size, batch_size=args.batch_size,
                                          language="en", without_timestamps=args.without_timestamps)
    else:
        segments, _ = model.transcribe(path, beam_size=args.beam_size, vad_filter=True, language="en",
                                       without_timestamps=args.without_timestamps,
                                       condition_on_previous_text=conditioned(args))
    return " ".join(s.text for s in segments)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifests", nargs="+", help="dataset manifests (JSONL: id, path, duration, text)")
    parser.add_argument("--model", default="base", choices=sorted(BUNDLED))
    parser.add_argument("--strategy", default="batched", choices=["batched", "sequential"])
    parser.add_argument("--beam-size", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compute_type", "--compute-type", default="float32", choices=["float32", "int8"],
                        help="both arms' weight type")
    parser.add_argument("--crop_s", type=float, default=None, help="cut long-form items at an utterance end")
    parser.add_argument("--without_timestamps", "--without-timestamps", action="store_true",
                        help="both arms decode text only (faster-whisper's batched default); without it both "
                             "predict timestamps")
    parser.add_argument("--condition_on_previous_text", "--condition-on-previous-text", default="auto",
                        choices=["auto", "true", "false"], help="see conditioned(); auto: the same task as "
                        "faster-whisper's (batched: off, sequential: on)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    torch.set_num_threads(args.threads)
    items = [item for manifest in args.manifests for item in load_dataset(manifest)]
    tmp_audio = tempfile.TemporaryDirectory()
    if args.crop_s:
        items = [crop(manifest, args.crop_s, Path(tmp_audio.name)) for manifest in args.manifests]
    ours = unique_asr.load_model(args.model, device="cpu", dtype=args.compute_type)
    with tempfile.TemporaryDirectory() as tmp:
        fw = WhisperModel(str(ct2_folder(args.model, Path(tmp))), device="cpu", compute_type=args.compute_type,
                          cpu_threads=args.threads)
    pipeline = BatchedInferencePipeline(fw)
    arms = {"unique-asr": lambda p: run_ours(ours, p, args),
            "faster-whisper": lambda p: run_faster_whisper(fw, pipeline, p, args)}
    for fn in arms.values():  # untimed warm-up of both arms (first-call costs: VAD model, kernel set-up)
        fn(str(items[0].audio))
    walls = {arm: [] for arm in arms}
    cpus = {arm: [] for arm in arms}  # process CPU seconds (all threads): less sensitive to other jobs' load
    texts = {}
    for _ in range(args.rounds):
        for arm, fn in arms.items():  # alternated: both arms see the same machine state
            started, cpu = time.perf_counter(), time.process_time()
            texts[arm] = [fn(str(item.audio)) for item in items]
            walls[arm].append(time.perf_counter() - started)
            cpus[arm].append(time.process_time() - cpu)
    audio_s = sum(item.duration for item in items)
    refs = " ".join(item.text for item in items)
    rows = []
    for arm in arms:
        wall = statistics.median(walls[arm])
        counts = align(words(refs), words(" ".join(texts[arm]))).counts
        rows.append({"arm": arm, "model": args.model, "strategy": args.strategy, "beam_size": args.beam_size,
                     "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
                     "load_average": os.getloadavg(),
                     "batch_size": args.batch_size, "condition_on_previous_text": conditioned(args),
                     "threads": args.threads, "audio_s": audio_s,
                     "median_wall_s": wall, "walls_s": walls[arm], "rtf": wall / audio_s, "rtfx": audio_s / wall,
                     "median_cpu_s": statistics.median(cpus[arm]), "cpus_s": cpus[arm],
                     "without_timestamps": args.without_timestamps,
                     "wer": counts.error_rate, "compute_type": args.compute_type})
    base, base_cpu = rows[1]["median_wall_s"], rows[1]["median_cpu_s"]
    for row in rows:
        row["speed_vs_faster_whisper"] = base / row["median_wall_s"]
        row["cpu_speed_vs_faster_whisper"] = base_cpu / row["median_cpu_s"]
        row["per_round_speed"] = [fw / ours for fw, ours in zip(walls["faster-whisper"], row["walls_s"])]
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"{args.model} {args.compute_type}, {args.strategy}, beam {args.beam_size}, batch {args.batch_size}, "
          f"timestamps {'off' if args.without_timestamps else 'on'}, {args.threads} threads, {audio_s:.0f} s audio, "
          f"{args.rounds} rounds, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
          f"load {os.getloadavg()[1]:.1f}")
    print(f"{'arm':16} {'wall s':>8} {'RTFx':>6} {'WER %':>6} {'x fw':>6} {'cpu s':>7} {'x fw':>6}  walls / cpu per round")
    for row in rows:
        print(f"{row['arm']:16} {row['median_wall_s']:8.1f} {row['rtfx']:6.1f} {100 * row['wer']:6.2f} "
              f"{row['speed_vs_faster_whisper']:6.2f} {row['median_cpu_s']:7.1f} "
              f"{row['cpu_speed_vs_faster_whisper']:6.2f}  " + " ".join(f"{w:.1f}" for w in row["walls_s"])
              + " / " + " ".join(f"{c:.1f}" for c in row["cpus_s"]))


if __name__ == "__main__":
    main()
