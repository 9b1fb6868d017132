"""Regenerate samples/: short synthesised speech with reference text, made by the project itself.

Speech comes from espeak-ng (GPL program; its output audio carries no licence restriction), voice
`en-us` at 140 words per minute:  espeak-ng -v en-us -s 140 -w out.wav "text".  (The mbrola voices are
not packaged for this Debian release, so the plain formant voice is used.) Each sentence is synthesised
on its own, resampled to 16 kHz with soxr and joined with the silences listed below, so the files hold
real pauses for the VAD. The text was written for this project and is dedicated to the public domain.

    python scripts/prepare_samples.py            # writes samples/{lecture,hello}.{flac,txt}
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import subprocess
import tempfile

import numpy as np
import soundfile as sf
import soxr

RATE = 16000
VOICE, WPM = "en-us", 140

LECTURE = [
    ("Good morning, and welcome back to our short course on the physics of sound.", 0.8),
    ("Today we look at how a microphone turns a spoken word into a list of numbers.", 0.6),
    ("Sound is a pressure wave. When you speak, your vocal folds push the air in small, rapid pulses.", 1.2),
    ("A microphone contains a thin membrane that moves with those pulses, "
     "and the motion becomes a voltage.", 0.7),
    ("To store that voltage, a computer measures it many times every second.", 0.5),
    ("For speech, sixteen thousand measurements per second are enough, because the useful sounds of a voice "
     "lie below eight thousand hertz.", 1.5),
    ("Each measurement is called a sample, and a long recording is simply a very long row of samples.", 0.9),
    ("A speech recogniser does not read those samples one at a time.", 0.4),
    ("Instead, it cuts the row into short frames, about one hundredth of a second apart, "
     "and asks which tones are loud in each frame.", 1.0),
    ("The answer is a picture of the voice over time, "
     "with low tones at the bottom and high tones at the top.", 0.8),
    ("Next week we will see how a neural network reads that picture "
     "and writes down the words. Thank you.", 0.0),
]
HELLO = [("Good morning. This is a short test of speech recognition, made with a synthetic voice.", 0.0)]


def synthesise(text: str, workdir: pathlib.Path) -> np.ndarray:
    """One sentence -> float32 mono 16 kHz samples, leading/trailing espeak silence kept as is."""
    wav = workdir / "s.wav"
    subprocess.run(["espeak-ng", "-v", VOICE, "-s", str(WPM), "-w", str(wav), text], check=True)
    audio, rate = sf.read(wav, dtype="float32")
    return soxr.resample(audio, rate, RATE).astype(np.float32)


def build(parts: list[tuple[str, float]], workdir: pathlib.Path) -> np.ndarray:
    pieces = []
    for text, pause_s in parts:
        pieces += [synthesise(text, workdir), np.zeros(round(pause_s * RATE), np.float32)]
    return np.concatenate(pieces)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path,
                        default=pathlib.Path(__file__).resolve().parents[1] / "samples")
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed (apt-get install -y espeak-ng)")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, parts in (("lecture", LECTURE), ("hello", HELLO)):
            audio = build(parts, pathlib.Path(tmp))
            sf.write(args.out / f"{name}.flac", audio, RATE, format="FLAC", subtype="PCM_16")
            (args.out / f"{name}.txt").write_text(" ".join(t for t, _ in parts) + "\n", encoding="utf-8")
            print(f"{name}: {len(audio) / RATE:.1f} s")


if __name__ == "__main__":
    main()
