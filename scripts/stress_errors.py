"""Where the word errors of scripts/eval_stress.py rows sit: per reference utterance, split by its place
relative to our decode windows (cut by the VAD): an utterance that a window boundary crosses or touches
(within --edge s), one partly outside every VAD span, and the rest (inside one window). Insertions count
for the utterance of the reference word before them. Per arm: errors in each class, and the utterances where
two arms differ most.

    python scripts/stress_errors.py outputs/stress/seed0.jsonl --rows /tmp/tiny.jsonl --arms batched,faster-whisper

--outside (no decoding, VAD only): per file and windowing setting, the reference utterance time that no
window holds (never decoded) and the utterances whose start lies more than 0.1 s before their window's:

    python scripts/stress_errors.py outputs/stress/seed*.jsonl --outside "min_silence_ms=300,speech_pad_ms=200" ""
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from unique_asr.config import TranscribeOptions
from unique_asr.eval.align import align
from unique_asr.eval.manifest import load_dataset
from unique_asr.eval.normalise import words
from unique_asr.vad import VadModel
from unique_asr.windows import iter_windows


def utterance_errors(utterances: list[str], hyp: list[str]) -> list[int]:
    """Errors (S + D + I) per reference utterance of the hypothesis words."""
    owner = [u for u, text in enumerate(utterances) for _ in words(text)]
    ref = [w for text in utterances for w in words(text)]
    errors = [0] * len(utterances)
    for tag, i1, i2, j1, j2 in align(ref, hyp).edits:
        if tag == "equal":
            continue
        if tag == "insert":
            errors[owner[max(i1 - 1, 0)]] += j2 - j1
        else:
            for i in range(i1, i2):
                errors[owner[i]] += 1
            if tag == "replace" and j2 - j1 > i2 - i1:
                errors[owner[i2 - 1]] += (j2 - j1) - (i2 - i1)
    return errors


def places(item, options: TranscribeOptions, vad: VadModel, edge: float) -> list[str]:
    """'edge', 'outside-vad' or 'inside' for each reference utterance under these windowing options."""
    windows = list(iter_windows(str(item.audio), options, vad))
    cuts = [w.start_s for w in windows] + [w.end_s for w in windows]
    spans = [(a / 16000, b / 16000) for w in windows for a, b in w.speech]
    out = []
    for seg in item.segments:
        a, b = seg["start"], seg["end"]
        inside = sum(max(0.0, min(b, y) - max(a, x)) for x, y in spans)
        if inside < (b - a) - 0.05:
            out.append("outside-vad")
        elif any(a - edge < c < b + edge for c in cuts):
            out.append("edge")
        else:
            out.append("inside")
    return out


def parse_set(text: str) -> dict:
    """'k=v,k=v' -> the TranscribeOptions overrides among them (the ones that shape windows), typed like the
    defaults; decode options (eval_stress.py --set accepts those too) leave the windows alone."""
    pairs = (kv.split("=", 1) for kv in text.split(",") if kv)
    return {k: type(getattr(TranscribeOptions(), k))(v) for k, v in pairs
            if hasattr(TranscribeOptions(), k) and not isinstance(getattr(TranscribeOptions(), k), bool)}


def outside(items: list, settings: list[str], vad: VadModel) -> None:
    """Print reference seconds outside every window / clipped utterance starts, per file and setting."""
    print(f"{'setting':40} " + " ".join(f"{i.id[-14:]:>14}" for i in items) + "   (ref s outside / clipped starts)")
    for setting in settings:
        options, cells = TranscribeOptions(**parse_set(setting)), []
        for item in items:
            windows = [(w.start_s, w.end_s) for w in iter_windows(str(item.audio), options, vad)]
            ref = [(s["start"], s["end"]) for s in item.segments]
            inside = sum(max(0.0, min(b, y) - max(a, x)) for a, b in ref for x, y in windows)
            clipped = sum(1 for a, _ in ref if not any(x <= a + 0.1 and a < y for x, y in windows))
            cells.append(f"{sum(b - a for a, b in ref) - inside:6.1f} / {clipped:<3d}")
        print(f"{setting or '(defaults)':40} " + " ".join(f"{c:>14}" for c in cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifests", nargs="+")
    parser.add_argument("--rows", nargs="+", type=Path, default=[], help="eval_stress.py --out files")
    parser.add_argument("--outside", nargs="+", metavar="SET", help="windowing settings to compare (k=v,k=v)")
    parser.add_argument("--arms", default="", help="comma list (default: every arm in the rows)")
    parser.add_argument("--edge", type=float, default=1.0)
    parser.add_argument("--show", type=int, default=4, help="utterances printed where the first two arms differ")
    args = parser.parse_args()
    vad = VadModel()
    if args.outside:
        return outside([i for m in args.manifests for i in load_dataset(m)], args.outside, vad)
    rows = [json.loads(line) for path in args.rows for line in path.read_text().splitlines() if line.strip()]
    arms = args.arms.split(",") if args.arms else list(dict.fromkeys(r["arm"] for r in rows))
    totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for item in (i for m in args.manifests for i in load_dataset(m)):
        texts = [s["text"] for s in item.segments]
        per_arm = {}
        for arm in arms:
            mine = [r for r in rows if r["arm"] == arm and r["id"] == item.id]
            if not mine:
                continue
            row = mine[-1]
            hyp = words(" ".join(t for _, _, t in row["segments"]))
            where = places(item, TranscribeOptions(**parse_set(row.get("set", ""))), vad, args.edge)
            errors = utterance_errors(texts, hyp)
            per_arm[arm] = (errors, where)
            for e, w in zip(errors, where):
                totals[arm][w] += e
                totals[arm]["utt_" + w] += 1
        if len(per_arm) >= 2 and args.show:
            a, b = list(per_arm)[:2]
            diff = sorted(range(len(texts)), key=lambda u: -abs(per_arm[a][0][u] - per_arm[b][0][u]))
            for u in diff[: args.show]:
                if per_arm[a][0][u] != per_arm[b][0][u]:
                    seg = item.segments[u]
                    print(f"{item.id} {seg['start']:7.2f}-{seg['end']:7.2f} {a}:{per_arm[a][0][u]} "
                          f"({per_arm[a][1][u]}) {b}:{per_arm[b][0][u]} ({per_arm[b][1][u]}) {seg['text'][:70]}")
    print(f"\n{'arm':28} {'inside':>12} {'edge':>12} {'outside-vad':>12}   (errors / utterances)")
    for arm in arms:
        t = totals[arm]
        print(f"{arm:28} " + " ".join(f"{t[w]:6d}/{t['utt_' + w]:<5d}" for w in ("inside", "edge", "outside-vad")))


if __name__ == "__main__":
    main()
