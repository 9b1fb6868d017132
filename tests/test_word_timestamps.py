"""Word timestamps (cross-attention DTW) on recorded speech with known word times, batched and sequential."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from speech_data import AUSTEN, joined

import unique_asr
from unique_asr.alignment import dtw, median_filter
from unique_asr.word_errors import timing_errors


def test_dtw_matches_a_plain_dynamic_programme():
    rng = np.random.default_rng(0)
    cost = rng.random((7, 11))
    i, j = dtw(cost)
    assert (i[0], j[0]) == (0, 0) and (i[-1], j[-1]) == (6, 10)
    assert np.all(np.diff(i) >= 0) and np.all(np.diff(j) >= 0) and np.all(np.diff(i) + np.diff(j) >= 1)
    acc = np.full((8, 12), np.inf)
    acc[0, 0] = 0
    for a in range(1, 8):
        for b in range(1, 12):
            acc[a, b] = cost[a - 1, b - 1] + min(acc[a - 1, b - 1], acc[a - 1, b], acc[a, b - 1])
    assert np.isclose(cost[i, j].sum(), acc[7, 11])


def test_median_filter_is_a_running_median():
    x = torch.tensor([[5.0, 1, 9, 3, 7, 2, 8]])
    assert median_filter(x, 3).tolist() == [[1.0, 5, 3, 7, 3, 7, 2]]  # reflect-padded ends


@pytest.fixture(scope="module")
def model():
    return unique_asr.load_model("tiny.en", device="cpu")


@pytest.mark.parametrize("strategy", ["batched", "sequential"])
def test_word_times_follow_the_recorded_words(model, strategy):
    audio, utterances = joined(AUSTEN[:3], gap_s=1.0, lead_s=0.5)
    segments, _ = model.transcribe(audio, word_timestamps=True, strategy=strategy)
    segments = list(segments)
    words = [w for s in segments for w in s.words]
    assert words and all(s.words for s in segments)
    for s in segments:
        assert all(s.start <= w.start <= w.end <= s.end for w in s.words)
        assert "".join(w.word for w in s.words).strip() == s.text.strip()
        assert all(0.0 <= w.probability <= 1.0 for w in s.words)
    assert all(a.start <= b.start for a, b in zip(words, words[1:]))
    reference = [w for u in utterances for w in u.words]
    starts, ends = timing_errors(words, reference)
    assert len(starts) >= 0.8 * len(reference)
    # measured on this input with tiny.en: median 0.1 s; a broken alignment lands seconds away
    assert np.median(starts) < 0.25 and np.median(ends) < 0.25
    assert np.percentile(starts, 95) < 1.0


def test_words_reach_the_json(model, tmp_path):
    from unique_asr.cli import main

    audio, _ = joined(AUSTEN[:1])
    import soundfile as sf

    sf.write(tmp_path / "a.flac", audio, 16000)
    assert main([str(tmp_path / "a.flac"), "--model", "tiny.en", "-o", str(tmp_path), "-f", "json,srt", "--quiet",
                 "--word_timestamps", "true", "--max_line_width", "20", "--max_line_count", "1"]) == 0
    srt = (tmp_path / "a.srt").read_text().split("\n\n")
    assert len(srt) > 3 and all(len(cue.splitlines()[2]) <= 20 and len(cue.splitlines()) == 3 for cue in srt if cue)
    import json

    payload = json.loads((tmp_path / "a.json").read_text())
    words = [w for s in payload["segments"] for w in s["words"]]
    assert words and set(words[0]) == {"start", "end", "word", "probability"}
