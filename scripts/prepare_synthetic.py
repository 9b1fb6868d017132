"""Training speech the project can make offline: espeak-ng reads procedurally generated English sentences.

    python scripts/prepare_synthetic.py --out data/train/synthetic --recordings 2000
    python scripts/prepare_synthetic.py --out data/train/synthetic --label dense --model base

Each recording joins 1-`--max-sentences` sentences, each spoken by one of espeak-ng's English voices and
variants at a random rate and pitch, with 0.2-0.8 s pauses; the manifest line (unique_asr.eval.manifest's
dataset format: id, path, duration, text, segments) carries per-sentence segments, so the fine-tuning data
loader packs long recordings into 30 s windows with timestamps. Labels: the generated text (`--label text`,
default) or the dense model's transcript of each sentence (`--label dense`, the issue's "labelled by the
dense model": the fine-tuned sparse model then learns to match its dense self). The text is written here
(a small grammar over a fixed vocabulary), so it is free of rights and disjoint from the evaluation sets'
books. `--text-file` reads sentences (one per line) from any text you may use instead, e.g. a
public-domain book.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

RATE = 16000
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-029", "en-us-nyc")
FORMATS = {"flac": ("flac", "FLAC", "PCM_16"), "opus": ("opus", "OGG", "OPUS")}
VARIANTS = ("", "+m1", "+m3", "+m5", "+f1", "+f2", "+f3", "+f4", "+klatt", "+klatt2")

WORDS = {
    "name": [
        "Anna",
        "Peter",
        "Maria",
        "Thomas",
        "Clara",
        "James",
        "Helen",
        "Robert",
        "Alice",
        "Daniel",
        "Laura",
        "Simon",
        "Grace",
        "Martin",
        "Emily",
        "Oliver",
    ],
    "noun": [
        "river",
        "garden",
        "letter",
        "window",
        "market",
        "teacher",
        "village",
        "engine",
        "doctor",
        "winter",
        "bridge",
        "station",
        "kitchen",
        "mountain",
        "library",
        "farmer",
        "harbour",
        "painting",
        "question",
        "morning",
        "captain",
        "journey",
        "forest",
        "island",
        "castle",
        "student",
        "machine",
        "country",
        "dinner",
        "ticket",
        "parcel",
        "lantern",
        "meadow",
    ],
    "adj": [
        "old",
        "quiet",
        "bright",
        "narrow",
        "heavy",
        "gentle",
        "distant",
        "golden",
        "careful",
        "sudden",
        "empty",
        "famous",
        "broken",
        "simple",
        "strange",
        "warm",
        "cold",
        "early",
        "late",
        "small",
        "large",
    ],
    "verb": [
        "visited",
        "carried",
        "opened",
        "painted",
        "followed",
        "watched",
        "repaired",
        "described",
        "crossed",
        "remembered",
        "found",
        "answered",
        "noticed",
        "built",
        "cleaned",
        "counted",
    ],
    "place": [
        "near the river",
        "behind the old church",
        "across the valley",
        "at the end of the street",
        "beside the harbour",
        "under the bridge",
        "in the north of the country",
        "on the second floor",
    ],
    "time": [
        "yesterday",
        "last winter",
        "early in the morning",
        "after dinner",
        "on Sunday",
        "in eighteen ninety",
        "twenty years ago",
        "before the storm",
        "at half past seven",
        "in the spring",
    ],
}
NUMBERS = [
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "twelve",
    "fifteen",
    "twenty",
    "forty",
    "a",
    "hundred",
]


def sentence(rng: random.Random) -> str:
    """One sentence from a small grammar (names, numbers, places and times give Whisper-like variety)."""
    w = {k: rng.choice(v) for k, v in WORDS.items()}
    n, other = rng.choice(NUMBERS), rng.choice(WORDS["noun"])
    forms = (
        f"{w['name']} {w['verb']} the {w['adj']} {w['noun']} {w['place']} {w['time']}.",
        f"{w['time'].capitalize()}, {n} {other}s were {w['verb']} {w['place']}.",
        f"Why did {w['name']} leave the {w['noun']} so {w['adj']} {w['time']}?",
        f"The {w['adj']} {w['noun']} {w['place']} was {w['verb']} by {w['name']} and {n} friends.",
        f"{w['name']} said that the {w['noun']} had been {w['adj']} since {w['time']}.",
        f"There are {n} {other}s {w['place']}, and every one of them is {w['adj']}.",
    )
    return rng.choice(forms)


def speak(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """espeak-ng's rendering of text -> float32 [samples] at 16 kHz."""
    wav = subprocess.run(
        ["espeak-ng", "--stdout", "-v", voice, "-s", str(speed), "-p", str(pitch), text],
        check=True,
        capture_output=True,
    ).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return soxr.resample(audio, rate, RATE).astype(np.float32)


def dense_labeller(model_name: str):
    """text_of(audio [samples] float32 16 kHz) -> the dense model's transcript (greedy, English, no VAD).

    English is forced: with detection, base hears some espeak voices as French and transcribes in French.
    """
    import unique_asr
    from unique_asr.config import TranscribeOptions

    model = unique_asr.load_model(model_name)
    options = TranscribeOptions(vad=False)

    def text_of(audio: np.ndarray) -> str:
        segments, _ = model.transcribe(audio, options, language="en")
        return " ".join(s.text.strip() for s in segments).strip()

    return text_of


def recording(rng: random.Random, sentences: list[str], label) -> tuple[np.ndarray, list[dict]]:
    """Sentences spoken in turn with pauses -> (audio, segments with start/end/text)."""
    voice = rng.choice(VOICES) + rng.choice(VARIANTS)
    speed, pitch = rng.randint(135, 195), rng.randint(25, 75)
    pieces, segments, t = [], [], 0.0
    for i, text in enumerate(sentences):
        gap = np.zeros(round(rng.uniform(0.2, 0.8) * RATE), np.float32)
        speech = speak(text, voice, speed, pitch)
        pieces += [gap, speech]
        start = t + len(gap) / RATE
        t = start + len(speech) / RATE
        segments.append(
            {"id": i, "start": round(start, 3), "end": round(t, 3), "text": label(speech) if label else text}
        )
    pieces.append(np.zeros(round(0.3 * RATE), np.float32))
    return np.concatenate(pieces), segments


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for manifest.jsonl and audio/")
    p.add_argument("--recordings", type=int, default=1000)
    p.add_argument("--max-sentences", type=int, default=12, help="sentences per recording (1..n)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--text-file", help="sentences to read, one per line, instead of generated ones")
    p.add_argument("--label", choices=("text", "dense"), default="text")
    p.add_argument(
        "--format",
        choices=tuple(FORMATS),
        default="flac",
        help="audio files: flac (lossless, ~17 KB/s) or opus (~3 KB/s: six times more speech per byte)",
    )
    p.add_argument("--model", default="base", help="dense labeller (with --label dense)")
    args = p.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
    rng = random.Random(args.seed)
    lines = None
    if args.text_file:
        lines = [
            s.strip() for s in Path(args.text_file).read_text(encoding="utf-8").splitlines() if s.strip()
        ]
    label = dense_labeller(args.model) if args.label == "dense" else None
    out = Path(args.out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    with open(out / "manifest.jsonl", "w", encoding="utf-8") as manifest:
        for i in range(args.recordings):
            n = rng.randint(1, args.max_sentences)
            texts = [rng.choice(lines) if lines else sentence(rng) for _ in range(n)]
            audio, segments = recording(rng, texts, label)
            suffix, container, subtype = FORMATS[args.format]
            path = f"audio/syn-{i:06d}.{suffix}"
            sf.write(out / path, audio, RATE, format=container, subtype=subtype)
            row = {
                "id": f"syn-{i:06d}",
                "path": path,
                "duration": round(len(audio) / RATE, 3),
                "text": " ".join(s["text"] for s in segments),
                "segments": segments,
            }
            manifest.write(json.dumps(row) + "\n")
    print(f"{args.recordings} recordings -> {out / 'manifest.jsonl'}")


if __name__ == "__main__":
    main()
