"""Builds tests/data/speech/ (real recorded speech for the test suite) from the pocketsphinx 5.1.1 source archive.

Sources (both redistributable, noted in tests/data/speech/LICENSE.md):
- five LibriVox utterances of "Sense and Sensibility", chapter 1 (public domain), as shipped in pocketsphinx's
  test/data/librivox with their transcripts and word alignments (pocketsphinx forced alignment, 10 ms frames);
- CMU Sphinx's goforward.raw ("go forward ten meters", another speaker; BSD-2, Carnegie Mellon University).

Get the archive with `pip download --no-deps --no-binary :all: --no-build-isolation pocketsphinx==5.1.1`
(needs scikit-build-core installed), unpack it, then: python scripts/prepare_test_speech.py pocketsphinx-5.1.1/test/data
"""

import argparse
import json
import re
from pathlib import Path

import numpy as np
import soundfile as sf

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "speech"
LIBRIVOX = ["0870", "0880", "0890", "0920", "0930"]


def words_from_alignment(path: Path) -> list[dict]:
    """pocketsphinx alignment JSON -> [{word, start, end}] without silences; '(2)' pronunciation tags dropped."""
    data = json.loads(path.read_text())
    words = []
    for w in data["w"]:
        if w["t"].startswith("<") or w["t"].startswith("["):
            continue
        words.append({"word": re.sub(r"\(\d+\)$", "", w["t"]), "start": round(w["b"], 3),
                      "end": round(w["b"] + w["d"], 3)})
    return words


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="pocketsphinx-5.1.1/test/data")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in LIBRIVOX:
        stem = f"sense_and_sensibility_01_austen_64kb-{n}"
        audio, sr = sf.read(args.data / "librivox" / f"{stem}.wav", dtype="int16")
        assert sr == 16000
        name = f"austen_{n}.flac"
        sf.write(OUT / name, audio, sr, format="FLAC")
        text = (args.data / "librivox" / f"{stem}.txt").read_text().strip()
        rows.append({"audio": name, "text": text, "duration": round(len(audio) / sr, 3), "speaker": "librivox_austen",
                     "source": f"LibriVox, Sense and Sensibility ch. 1 (pocketsphinx test/data/librivox/{stem})",
                     "licence": "public domain", "words": words_from_alignment(args.data / "librivox" / f"{stem}.json")})
    raw = np.fromfile(args.data / "goforward.raw", dtype="<i2")
    sf.write(OUT / "goforward.flac", raw, 16000, format="FLAC")
    rows.append({"audio": "goforward.flac", "text": "go forward ten meters", "duration": round(len(raw) / 16000, 3),
                 "speaker": "cmu_goforward", "source": "CMU Sphinx pocketsphinx test/data/goforward.raw",
                 "licence": "BSD-2-Clause, Carnegie Mellon University", "words": []})
    with open(OUT / "manifest.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"wrote {len(rows)} clips to {OUT}")


if __name__ == "__main__":
    main()
