"""Build a seeded long-form stress set from the dev clips: speaker changes, short and long gaps, music-like
noise or silence inserted, utterance order shuffled; with references and per-utterance segment times.

Clips come from the dev sets in ../shared/data (LibriSpeech test-other: 5 speakers; LJ Speech: 1 reader),
drawn without replacement and shuffled, so neighbouring utterances change speaker often. Between them: a
short (0.2-0.8 s) or long (1.5-4 s) pause, and now and then 2-6 s of music-like noise (chords of sine tones
with vibrato and note changes, over soft noise) or of silence. Writes 16 kHz FLAC files and a manifest.jsonl
in the dev long-form format (id, path, duration, sample_rate, text, segments) to --out (keep it outside the
repository, e.g. outputs/stress; it is git-ignored there).

    python scripts/make_stress_set.py --seeds 0 1 2 --minutes 4 --out outputs/stress
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

RATE = 16000
SETS = ("librispeech-test-other-dev", "ljspeech-lj001")


def load_clips(data: Path) -> list[dict]:
    """Every clip of the dev sets: {id, speaker, text, path}."""
    clips = []
    for name in SETS:
        folder = data / name
        for line in (folder / "manifest.jsonl").read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                clips.append({"id": row["id"], "speaker": row.get("speaker", name), "text": row["text"],
                              "path": folder / row["path"]})
    return clips


def read16k(path: Path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    return soxr.resample(audio, rate, RATE).astype(np.float32) if rate != RATE else audio


def music_like(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Chords of three sine tones with vibrato, a new chord every 0.25-0.6 s, over soft noise."""
    n = int(seconds * RATE)
    out, at = np.zeros(n, np.float32), 0
    while at < n:
        length = min(n - at, int(rng.uniform(0.25, 0.6) * RATE))
        t = np.arange(length) / RATE
        root = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        chord = sum(np.sin(2 * np.pi * root * ratio * t + 0.003 * root * np.sin(2 * np.pi * 5.5 * t))
                    for ratio in (1.0, 1.26, 1.5))
        envelope = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)
        out[at:at + length] = chord * envelope / 3
        at += length
    level = rng.uniform(0.03, 0.1)
    return (level * out + 0.005 * rng.standard_normal(n)).astype(np.float32)


def build(clips: list[dict], seed: int, minutes: float, out: Path) -> dict:
    """One long-form file of about `minutes` of audio; returns its manifest row."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(clips))
    parts, segments, texts, at = [np.zeros(int(0.5 * RATE), np.float32)], [], [], int(0.5 * RATE)
    inserts = {"noise": 0, "silence": 0}
    for k in order:
        if at >= minutes * 60 * RATE:
            break
        clip = clips[k]
        audio = read16k(clip["path"])
        segments.append({"id": clip["id"], "speaker": clip["speaker"], "start": round(at / RATE, 4),
                         "end": round((at + len(audio)) / RATE, 4), "text": clip["text"]})
        texts.append(clip["text"])
        parts.append(audio)
        at += len(audio)
        gap = rng.uniform(0.2, 0.8) if rng.random() < 0.7 else rng.uniform(1.5, 4.0)
        kind = rng.choice(["pause", "noise", "silence"], p=[0.8, 0.12, 0.08])
        pause = np.zeros(int(gap * RATE), np.float32)
        if kind == "pause":
            filler = pause
        else:
            inserts[str(kind)] += 1
            span = rng.uniform(2.0, 6.0)
            body = music_like(rng, span) if kind == "noise" else np.zeros(int(span * RATE), np.float32)
            filler = np.concatenate([pause, body, np.zeros(int(0.5 * RATE), np.float32)])
        parts.append(filler)
        at += len(filler)
    audio = np.concatenate(parts)
    name = f"stress-seed{seed}"
    sf.write(out / "audio" / f"{name}.flac", audio, RATE)
    speakers = [s["speaker"] for s in segments]
    changes = sum(a != b for a, b in zip(speakers, speakers[1:]))
    return {"id": name, "path": f"audio/{name}.flac", "duration": round(len(audio) / RATE, 4), "sample_rate": RATE,
            "text": " ".join(texts), "segments": segments, "seed": seed, "speaker_changes": changes,
            "inserted": inserts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--minutes", type=float, default=4.0, help="audio per file (about)")
    parser.add_argument("--out", type=Path, default=Path("outputs/stress"))
    args = parser.parse_args()
    clips = load_clips(args.data)
    (args.out / "audio").mkdir(parents=True, exist_ok=True)
    rows = [build(clips, seed, args.minutes, args.out) for seed in args.seeds]
    (args.out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for r in rows:
        print(f"{r['id']}: {r['duration']:.1f} s, {len(r['segments'])} utterances, {r['speaker_changes']} speaker "
              f"changes, inserted {r['inserted']}")


if __name__ == "__main__":
    main()
