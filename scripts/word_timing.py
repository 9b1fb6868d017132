"""Word-timing error of --word_timestamps against recorded word times (tests/data/speech, LibriVox clips with
forced-alignment word times), per strategy: median and p95 of |start - ref| and |end - ref|.

    python scripts/word_timing.py --model tiny.en
    python scripts/word_timing.py --model tiny.en --longform ../shared/data/ljspeech-lj001-longform/manifest.jsonl

--longform: a long-form manifest whose item has per-utterance `segments` (start, end, text): the first word
of every utterance is compared with the utterance start and the last word with its end. The clip edges hold
LJ Speech's own leading/trailing silence, so that error includes the silence (an upper bound); the second
reference trims each utterance to its speech by energy (first / last 10 ms frame within 35 dB of the
utterance's loudest frame), which is closer to where a word starts and ends.

--attention (long-form): `dense`; `unique:B` (the decode reads B frames per query with UNIQUE page
selection, page 8; the words are aligned densely, as the transcriber does); `unique-align:B` (dense decode,
but the alignment heads' attention is zero outside the B frames UNIQUE selects per query: what aligning with
the sparse attention itself would give). Comma list; each is one transcription of the file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from speech_data import AUSTEN, joined  # noqa: E402

import unique_asr  # noqa: E402
from unique_asr.word_errors import timing_errors  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--strategies", default="batched,sequential")
    parser.add_argument("--longform", default=None)
    parser.add_argument("--attention", default="dense")
    args = parser.parse_args()
    model = unique_asr.load_model(args.model, device="cpu")
    if args.longform:
        return longform(model, args)
    audio, utterances = joined(AUSTEN, gap_s=1.0, lead_s=0.5)
    reference = [w for u in utterances for w in u.words]
    print(f"| model | strategy | words matched | start median | start p95 | end median | end p95 |")
    print("|---|---|---|---|---|---|---|")
    for strategy in args.strategies.split(","):
        segments, _ = model.transcribe(audio, word_timestamps=True, strategy=strategy)
        words = [w for s in segments for w in s.words]
        starts, ends = timing_errors(words, reference)
        print(f"| {args.model} | {strategy} | {len(starts)}/{len(reference)} | {np.median(starts):.3f} s | "
              f"{np.percentile(starts, 95):.3f} s | {np.median(ends):.3f} s | {np.percentile(ends, 95):.3f} s |")


def speech_edges(audio: np.ndarray, start: float, end: float, floor_db: float = 35.0) -> tuple[float, float]:
    """First and last 10 ms frame of [start, end) within floor_db of its loudest frame (seconds)."""
    a, b = int(start * 16000), int(end * 16000)
    frames = audio[a:b][: (b - a) // 160 * 160].reshape(-1, 160)
    level = 10 * np.log10((frames.astype(np.float64) ** 2).mean(axis=1) + 1e-12)
    loud = np.flatnonzero(level >= level.max() - floor_db)
    return start + loud[0] * 0.01, start + (loud[-1] + 1) * 0.01


def sparse_alignment(budget: int, page: int = 8, lam: float = 0.5):
    """Patch the alignment's recording memory so that each alignment head's attention is softmax over the
    frames of the `budget // page` pages with the best UNIQUE score (q.mu + lam*||q||*std), zero elsewhere."""
    import torch

    from unique_asr import alignment

    def attend(self, layer, q):
        k = self.k[layer]
        for lay, head in self.heads:
            if lay == layer:
                qh, kh = q[0, :, head].float(), k[0, : self.frames, head].float()  # [T, D], [F, D]
                n_pages = -(-self.frames // page)
                padded = torch.zeros(n_pages * page, kh.shape[-1])
                padded[: self.frames] = kh
                count = torch.full((n_pages,), float(page))
                count[-1] = self.frames - (n_pages - 1) * page
                pages = padded.view(n_pages, page, -1)
                mu = pages.sum(1) / count[:, None]
                valid = (torch.arange(n_pages * page) < self.frames).view(n_pages, page, 1)
                std = ((((pages - mu[:, None]) ** 2) * valid).sum((1, 2)) / count).sqrt()
                score = qh @ mu.T + lam * qh.norm(dim=-1, keepdim=True) * std  # [T, P]
                keep = torch.zeros_like(score, dtype=torch.bool)
                keep.scatter_(1, score.topk(min(budget // page, n_pages), dim=1).indices, True)
                frame_keep = keep.repeat_interleave(page, dim=1)[:, : self.frames]
                logits = (qh @ kh.T) * q.shape[-1] ** -0.5
                self.weights[(lay, head)] = logits.masked_fill(~frame_keep, -torch.inf).softmax(dim=-1)
        return alignment.dense_attention(q, k, self.v[layer])

    return attend


def longform(model, args) -> None:
    import json
    import re

    import soundfile as sf

    from unique_asr import alignment

    item = json.loads(Path(args.longform).read_text().splitlines()[0])
    path = Path(args.longform).parent / item["path"] if "path" in item else Path(args.longform).parent / item["audio"]
    audio, _ = sf.read(str(path), dtype="float32")
    norm = lambda w: re.sub(r"[^a-z0-9']", "", w.lower())  # noqa: E731
    edges = [speech_edges(audio, u["start"], u["end"]) for u in item["segments"]]
    print("| model | attention | reference | utterances timed (first + last word) | first-word start error "
          "median | p95 | last-word end error median | p95 |")
    print("|---|---|---|---|---|---|---|---|")
    original = alignment._RecordingMemory.attend
    for attention in args.attention.split(","):
        mode, _, budget = attention.partition(":")
        overrides = {}
        alignment._RecordingMemory.attend = original
        if mode == "unique":
            overrides = dict(mode="unique", budget=int(budget), page_size=8)
        elif mode == "unique-align":
            alignment._RecordingMemory.attend = sparse_alignment(int(budget))
        segments, _ = model.transcribe(str(path), word_timestamps=True, **overrides)
        words = [w for s in segments for w in s.words]
        for reference in ("clip edges", "speech by energy"):
            starts, ends = [], []
            for u, (speech_start, speech_end) in zip(item["segments"], edges):
                ref_start, ref_end = (u["start"], u["end"]) if reference == "clip edges" else (speech_start, speech_end)
                ref = u["text"].split()
                first, last = norm(ref[0]), norm(ref[-1])
                near = [w for w in words if abs(w.start - ref_start) < 2.0 and norm(w.word) == first]
                if near:
                    starts.append(min(abs(w.start - ref_start) for w in near))
                near = [w for w in words if abs(w.end - ref_end) < 2.0 and norm(w.word) == last]
                if near:
                    ends.append(min(abs(w.end - ref_end) for w in near))
            print(f"| {args.model} | {attention} | {reference} | {len(starts)}+{len(ends)} of "
                  f"{len(item['segments'])} | {np.median(starts):.3f} s | {np.percentile(starts, 95):.3f} s | "
                  f"{np.median(ends):.3f} s | {np.percentile(ends, 95):.3f} s |", flush=True)
    alignment._RecordingMemory.attend = original


if __name__ == "__main__":
    main()
