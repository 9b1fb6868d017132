"""Manifests -> packed windows -> batches; the resumable sampler."""

from __future__ import annotations

import json

import pytest
from train_helpers import TINY

from unique_asr.eval.manifest import DatasetItem
from unique_asr.train.data import (
    IGNORE,
    Collator,
    ResumableSampler,
    WindowDataset,
    load_windows,
    pack_windows,
)
from unique_asr.train.run import random_whisper


@pytest.fixture(scope="module")
def tokenizer():
    return random_whisper(TINY["dims"], "tiny.en", 0)[1]


def _item(segments, duration=100.0):
    return DatasetItem("rec", "x.flac", duration, " ".join(s["text"] for s in segments), tuple(segments))


def test_packing_keeps_windows_within_the_limit_and_the_text_in_order():
    segs = [{"start": 4.0 * i, "end": 4.0 * i + 3.5, "text": f"w{i}"} for i in range(20)]  # 80 s
    segs.insert(5, {"start": 20.5, "end": 55.0, "text": "too long"})
    windows = pack_windows(_item(segs), 30.0)
    assert all(w.end_s - w.start_s <= 30.0 for w in windows)
    assert [t for w in windows for _, _, t in w.segments] == [f"w{i}" for i in range(20)]
    assert windows[0].text == " ".join(f"w{i}" for i in range(6))  # the long segment (after w5) closes it
    assert all(s >= 0 and e <= w.end_s - w.start_s + 1e-9 for w in windows for s, e, _ in w.segments)


def test_unsegmented_items_are_one_window_or_skipped():
    short = DatasetItem("a", "a.flac", 12.0, "hello there")
    assert [(w.start_s, w.end_s, w.text) for w in pack_windows(short)] == [(0.0, 12.0, "hello there")]
    assert pack_windows(DatasetItem("b", "b.flac", 31.0, "long"), 30.0) == []


def test_window_audio_is_the_segment_stretch(train_manifest):
    windows = load_windows(train_manifest)
    row = json.loads(train_manifest.read_text().splitlines()[0])
    audio, w = WindowDataset(windows)[0]
    assert w.id.startswith(row["id"]) and audio.dtype.name == "float32"
    assert len(audio) == round((w.end_s - w.start_s) * 16000)


def test_collation_masks_the_prompt_and_places_timestamps(tokenizer, train_manifest):
    windows = load_windows(train_manifest)[:2]
    samples = [WindowDataset(windows)[i] for i in range(2)]
    batch = Collator(tokenizer, timestamps=True)(samples)
    assert batch.mel.shape == (2, 80, 3000) and batch.tokens.shape == batch.labels.shape
    for row, w in enumerate(windows):
        seq, n_prompt = Collator(tokenizer).target(w)
        assert seq[:n_prompt] == tokenizer.sot_sequence("en", timestamps=True)
        assert seq[n_prompt] == tokenizer.timestamp_begin + round(w.segments[0][0] / 0.02)
        labels = batch.labels[row]
        assert (labels[: n_prompt - 1] == IGNORE).all()
        assert labels[n_prompt - 1 : len(seq) - 1].tolist() == seq[n_prompt:]  # next-token targets
        assert batch.tokens[row, : len(seq) - 1].tolist() == seq[:-1]
        assert (labels[len(seq) - 1 :] == IGNORE).all() and seq[-1] == tokenizer.eot
        assert tokenizer.decode(seq).strip() == w.text
    plain, n_prompt = Collator(tokenizer, timestamps=False).target(windows[0])
    assert plain[n_prompt - 1] == tokenizer.no_timestamps and all(
        t < tokenizer.eot for t in plain[n_prompt:-1]
    )


def test_sampler_resumes_mid_epoch_and_splits_ranks():
    data = list(range(10))
    full = ResumableSampler(data, seed=3)
    full.set_position(2, 0)
    order = list(full)
    resumed = ResumableSampler(data, seed=3)
    resumed.set_position(2, 4)
    assert list(resumed) == order[4:] and len(resumed) == 6
    ranks = [ResumableSampler(data, num_replicas=2, rank=r, seed=3) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(2)
    parts = [r.order() for r in ranks]
    assert not set(parts[0]) & set(parts[1]) and len(parts[0]) == len(parts[1]) == 5
    other = ResumableSampler(data, seed=3)
    other.set_epoch(1)
    assert other.order() != order
