"""Training data: JSONL manifests -> <= 30 s windows with their text -> batches of log-mel + token ids.

A manifest line is the dataset format of `unique_asr.eval.manifest` (id, path, duration, text, optional
segments [{start, end, text}]). Long recordings with segments are packed greedily into windows of
consecutive segments that fit `max_window_s`; a recording without segments is one window and must fit.
The sampler is a `DistributedSampler` that can start mid-epoch, so a resumed run sees exactly the batches
the uninterrupted run would have seen.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from unique_asr.audio import SAMPLE_RATE, LogMel, stream
from unique_asr.eval.manifest import DatasetItem, load_dataset

log = logging.getLogger(__name__)
IGNORE = -100  # label value cross_entropy skips (prompt and padding positions)
TIME_STEP_S = 0.02  # one Whisper timestamp token


@dataclass(frozen=True)
class DataOptions:
    """train / eval: dataset manifests (eval may be None: no periodic evaluation); eval_limit: items scored.

    max_window_s: window length for packing; timestamps: targets carry segment timestamp tokens when the
    window's segments are known (otherwise <|notimestamps|> form); language: prompt language (multilingual).
    """

    train: str
    eval: str | None = None
    eval_limit: int | None = None
    max_window_s: float = 30.0
    timestamps: bool = True
    language: str = "en"
    num_workers: int = 0


@dataclass(frozen=True)
class Window:
    """One training example: [start_s, end_s) of a recording, its text, its segments (relative times)."""

    id: str
    audio: Path
    start_s: float
    end_s: float
    text: str
    segments: tuple[tuple[float, float, str], ...] = ()


def pack_windows(item: DatasetItem, max_window_s: float = 30.0) -> list[Window]:
    """Windows of consecutive segments that fit max_window_s (greedy); the whole item when it has none.

    A segment longer than max_window_s, or an item without segments longer than it, is skipped (logged).
    """
    if not item.segments:
        if item.duration > max_window_s:
            log.warning(
                "%s: %.1f s without segments does not fit a %.0f s window; skipped",
                item.id,
                item.duration,
                max_window_s,
            )
            return []
        return [Window(item.id, item.audio, 0.0, item.duration, item.text.strip())]
    windows, group = [], []

    def close() -> None:
        if group:
            start, end = float(group[0]["start"]), float(group[-1]["end"])
            rel = tuple(
                (float(s["start"]) - start, float(s["end"]) - start, str(s["text"]).strip()) for s in group
            )
            text = " ".join(t for _, _, t in rel if t)
            windows.append(Window(f"{item.id}/{len(windows)}", item.audio, start, end, text, rel))
            group.clear()

    for seg in sorted(item.segments, key=lambda s: float(s["start"])):
        if float(seg["end"]) - float(seg["start"]) > max_window_s:
            log.warning(
                "%s: segment %.1f-%.1f s is longer than a window; skipped", item.id, seg["start"], seg["end"]
            )
            close()
            continue
        if group and float(seg["end"]) - float(group[0]["start"]) > max_window_s:
            close()
        group.append(seg)
    close()
    return windows


def load_windows(manifest: str | Path, max_window_s: float = 30.0, limit: int | None = None) -> list[Window]:
    """Every window of a dataset manifest, in manifest order."""
    return [w for item in load_dataset(manifest, limit) for w in pack_windows(item, max_window_s)]


class WindowDataset(Dataset):
    """windows[i] -> (audio float32 [samples] at 16 kHz, Window); only that stretch of the file is decoded."""

    def __init__(self, windows: Sequence[Window]):
        self.windows = list(windows)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> tuple[np.ndarray, Window]:
        w = self.windows[index]
        start = round(w.start_s * SAMPLE_RATE)
        length = max(1, round((w.end_s - w.start_s) * SAMPLE_RATE))
        audio = next(stream(str(w.audio), block_s=length / SAMPLE_RATE, start_sample=start), None)
        if audio is None:
            raise ValueError(f"{w.audio}: no audio at {w.start_s:.2f} s")
        return audio[:length], w


@dataclass
class Batch:
    """mel float32 [B, n_mels, 3000]; tokens int64 [B, T] (decoder input); labels int64 [B, T] (IGNORE where
    no loss: the prompt and padding)."""

    mel: torch.Tensor
    tokens: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device) -> Batch:
        return Batch(*(t.to(device, non_blocking=True) for t in (self.mel, self.tokens, self.labels)))


class Collator:
    """Samples -> Batch with Whisper's prompt: sot sequence, text (with timestamps when known), eot."""

    def __init__(
        self,
        tokenizer,
        n_mels: int = 80,
        language: str = "en",
        timestamps: bool = True,
        max_tokens: int = 448,
    ):
        self.tokenizer, self.language, self.timestamps, self.max_tokens = (
            tokenizer,
            language,
            timestamps,
            max_tokens,
        )
        self.mel = LogMel(n_mels)

    def target(self, window: Window) -> tuple[list[int], int]:
        """Full token sequence of a window and the length of its prompt (positions without loss)."""
        tok = self.tokenizer
        timed = self.timestamps and bool(window.segments)
        prompt = tok.sot_sequence(
            self.language if tok.is_multilingual else "en", "transcribe", timestamps=timed
        )
        body: list[int] = []
        if timed:
            last = tok.timestamp_begin + 1500
            for start, end, text in window.segments:
                body.append(min(last, tok.timestamp_begin + round(start / TIME_STEP_S)))
                body += tok.encode(" " + text)
                body.append(min(last, tok.timestamp_begin + round(end / TIME_STEP_S)))
        else:
            body = tok.encode(" " + window.text)
        seq = (prompt + body)[: self.max_tokens] + [tok.eot]
        return seq, len(prompt)

    def __call__(self, samples: Sequence[tuple[np.ndarray, Window]]) -> Batch:
        seqs = [self.target(w) for _, w in samples]
        width = max(len(s) for s, _ in seqs) - 1
        tokens = torch.full((len(seqs), width), self.tokenizer.eot, dtype=torch.int64)
        labels = torch.full((len(seqs), width), IGNORE, dtype=torch.int64)
        for row, (seq, n_prompt) in enumerate(seqs):
            ids = torch.tensor(seq, dtype=torch.int64)
            tokens[row, : len(seq) - 1] = ids[:-1]
            labels[row, n_prompt - 1 : len(seq) - 1] = ids[n_prompt:]
        audio = torch.zeros(len(samples), max(len(a) for a, _ in samples))
        for row, (a, _) in enumerate(samples):
            audio[row, : len(a)] = torch.from_numpy(a)
        return Batch(self.mel(audio), tokens, labels)


class ResumableSampler(DistributedSampler):
    """DistributedSampler that starts an epoch at a given batch: `set_position(epoch, skip)` drops the first
    `skip` indices of this rank's order for that epoch (the seed makes the order reproducible)."""

    def __init__(
        self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True
    ):
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True
        )
        self.skip = 0

    def order(self) -> list[int]:
        """This rank's full index order for the current epoch."""
        return list(super().__iter__())

    def set_position(self, epoch: int, skip: int) -> None:
        self.set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        return iter(self.order()[self.skip :])

    def __len__(self) -> int:
        return self.num_samples - self.skip
