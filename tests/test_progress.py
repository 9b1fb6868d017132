"""Honest progress (issue 18): a report per finished window over seconds of detected speech, a total estimated
from the speech density so far and exact at the end, where the bar stands at the detected speech."""

from __future__ import annotations

import re

import pytest
import soundfile as sf

from speech_data import AUSTEN, joined
from unique_asr.api import load_model
from unique_asr.cli import main
from unique_asr.progress import Progress

RATE = 16000


def test_total_is_estimated_from_the_speech_density_and_exact_when_done():
    assert Progress(0.0, 0.0, 0.0, 600.0, 0).total_s is None  # nothing scanned: no guess
    assert Progress(5.0, 20.0, 100.0, 600.0, 1).total_s == pytest.approx(20.0 + 500.0 * 0.2)
    assert Progress(5.0, 20.0, 100.0, None, 1).total_s is None  # stdin: length unknown
    assert Progress(30.0, 31.0, 590.0, 600.0, 9, done=True).total_s == 31.0


@pytest.fixture(scope="module")
def model():
    return load_model("tiny.en", device="cpu")


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """Four utterances with pauses and leading silence: several windows of <= 6 s."""
    path = tmp_path_factory.mktemp("rec") / "talk.flac"
    sf.write(path, joined(AUSTEN[:4], gap_s=1.5, lead_s=3.0)[0], RATE)
    return path


@pytest.mark.parametrize("strategy", ["batched", "sequential"])
def test_a_report_per_window_ending_at_the_detected_speech(model, recording, strategy):
    reports: list[Progress] = []
    segments, info = model.transcribe(str(recording), strategy=strategy, batch_size=2, max_window_s=6.0,
                                      progress=reports.append)
    list(segments)
    assert info.windows >= 3
    finished = [r.windows for r in reports]
    assert finished == sorted(finished) and set(finished) == set(range(info.windows + 1))  # each window reported
    assert [r.done for r in reports] == [False] * (len(reports) - 1) + [True]
    values = [r.decoded_s for r in reports]
    assert values == sorted(values)  # never backwards
    moves = sum(b > a + 1e-9 for a, b in zip(values, values[1:]))
    assert moves == info.windows  # every window moves it, once
    last = reports[-1]
    assert last.total_s == pytest.approx(info.speech_s) and last.decoded_s == pytest.approx(info.speech_s)
    assert info.speech_s < info.duration_s - 4  # speech, not audio: the silences are not counted
    estimates = [r.total_s for r in reports[1:-1]]
    assert all(e == pytest.approx(info.speech_s, rel=0.6) for e in estimates)  # sensible all along


def test_batched_bar_moves_per_window_inside_a_batch(model, recording):
    """All windows in one batch: the bar still moves as each window's tokens are chosen, before the batch ends
    (it used to sit still for a whole batch of 16 windows, minutes on a CPU)."""
    reports: list[Progress] = []
    segments, info = model.transcribe(str(recording), strategy="batched", batch_size=16, max_window_s=6.0,
                                      progress=reports.append)
    list(segments)
    assert info.windows >= 3
    before_first_finish = [r.decoded_s for r in reports if r.windows == 0]
    assert len(set(before_first_finish)) == info.windows + 1  # 0, then one value per window of the batch
    assert before_first_finish[-1] == pytest.approx(info.speech_s)


def test_cli_bar_ends_at_the_detected_speech(recording, tmp_path, capsys):
    assert main([str(recording), "--model", "tiny.en", "--max_window_s", "6", "--output_format", "txt",
                 "--output_dir", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    bars = re.findall(r"talk\.flac:\s+(\d+)%\|[^|]*\| ([\d.]+)/([\d.?]+) s speech", err)
    assert len(bars) >= 2, err
    percent, n, total = bars[-1]
    detected = float(re.search(r"of ([\d.]+) s detected speech", err).group(1))
    assert percent == "100" and float(n) == pytest.approx(detected, abs=0.06) and float(total) == pytest.approx(detected, abs=0.06)
