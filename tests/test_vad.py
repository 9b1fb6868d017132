"""Silero VAD: model parity with the package's own API, the streaming span rule, spans on real speech."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch

from unique_asr.audio import SAMPLE_RATE, load
from unique_asr.config import TranscribeOptions
from unique_asr.vad import FRAME, SpanTracker, SpeechSpan, VadModel, iter_speech_spans, vad_frames

SAMPLES = pathlib.Path(__file__).resolve().parents[1] / "samples"
PAD = 200 * SAMPLE_RATE // 1000  # TranscribeOptions.speech_pad_ms in samples


@pytest.fixture(scope="module")
def vad() -> VadModel:
    return VadModel()


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SAMPLE_RATE), np.float32)


def speech_extent(x: np.ndarray) -> tuple[int, int]:
    """First and one-past-last sample of a clip that is not (near) digital silence."""
    loud = np.flatnonzero(np.abs(x) > 1e-3)
    return int(loud[0]), int(loud[-1]) + 1


def run_tracker(probs: list[float], options: TranscribeOptions, total: int | None = None) -> list[SpeechSpan]:
    tracker = SpanTracker(options, history_frames=1)
    spans = [s for p in probs for s in tracker.push(p)]
    return spans + tracker.finish(total if total is not None else len(probs) * FRAME)


def test_probs_match_silero_public_api(vad):
    x = np.concatenate([silence(0.5), load(SAMPLES / "hello.flac")])[: 200 * FRAME]
    jit = vad._jit
    jit.reset_states()
    with torch.jit.optimized_execution(False):  # skip TorchScript's warm-up compilation: seconds on CPU
        want = jit.audio_forward(torch.from_numpy(x)[None], SAMPLE_RATE).flatten().numpy()
    state = vad.new_state()
    got = np.concatenate([vad.probs(f, state) for _, f in vad_frames([x[:7000], x[7000:]])])
    np.testing.assert_allclose(got, want, atol=1e-4)  # batched float32 sums differ ~1e-5
    assert want.max() > 0.9 and want[:10].max() < 0.2  # speech and silence are both in there


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_front_on_gpu_gives_the_cpu_probabilities(vad):
    x = np.concatenate([silence(0.5), load(SAMPLES / "hello.flac"), silence(1.0)])
    blocks = [x[:9000], x[9000:]]
    want = np.concatenate([vad.probs(f, s) for s in [vad.new_state()] for _, f in vad_frames(blocks)])
    gpu = VadModel("cuda")
    got = np.concatenate([gpu.probs(f, s) for s in [gpu.new_state()] for _, f in vad_frames(blocks)])
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert want.max() > 0.9


def test_hysteresis_min_silence_and_padding():
    # 20 silent, 30 speech, 5 silent (too short to close), 10 speech, 35 silent frames
    probs = [0.0] * 20 + [0.9] * 30 + [0.1] * 5 + [0.9] * 10 + [0.0] * 35
    assert run_tracker(probs, TranscribeOptions()) == [SpeechSpan(20 * FRAME - PAD, 65 * FRAME + PAD)]
    # values between threshold - 0.15 and threshold neither open nor end a span
    assert run_tracker([0.0] * 10 + [0.45] * 30, TranscribeOptions()) == []


def test_close_spans_never_overlap_and_open_span_ends_at_stream_end():
    probs = [0.0] * 10 + [0.9] * 20 + [0.0] * 10 + [0.9] * 20 + [0.0] * 40
    first, second = run_tracker(probs, TranscribeOptions())
    assert first == SpeechSpan(10 * FRAME - PAD, 30 * FRAME + PAD)
    assert second == SpeechSpan(first.end_sample, 60 * FRAME + PAD)  # start clamped to the previous end
    assert run_tracker([0.0] * 5 + [0.9] * 5, TranscribeOptions(), total=5020) == [SpeechSpan(0, 5020)]


def test_spans_released_in_order_when_padding_exceeds_min_silence():
    options = TranscribeOptions(min_silence_ms=50)
    probs = [0.0] * 10 + [0.9] * 2 + [0.0] * 2 + [0.9] * 2 + [0.0] * 2 + [0.9] * 2 + [0.0] * 30
    spans = run_tracker(probs, options)
    assert len(spans) == 3 and spans[0].start_sample == 10 * FRAME - PAD
    assert all(a.end_sample == b.start_sample for a, b in zip(spans, spans[1:]))
    assert all(s.samples > 0 for s in spans) and spans[-1].end_sample == 20 * FRAME + PAD


def test_spans_on_speech_with_known_silences(vad):
    clip = load(SAMPLES / "hello.flac")
    on, off = speech_extent(clip)
    gaps = [2.0, 1.5, 3.0]
    x = np.concatenate([silence(gaps[0]), clip, silence(gaps[1]), clip, silence(gaps[2])])
    starts = [len(silence(gaps[0])), len(silence(gaps[0])) + len(clip) + len(silence(gaps[1]))]
    truth = [(s + on, s + off) for s in starts]
    spans = list(iter_speech_spans(x, TranscribeOptions(), vad, block_s=0.3))
    assert spans == list(iter_speech_spans(x, TranscribeOptions(), vad, block_s=10.0))  # blocks are invisible
    slack = PAD + 3 * FRAME
    for a, b in truth:  # each clip is covered by spans that begin and end within the padding of its edges
        inside = [s for s in spans if s.end_sample > a and s.start_sample < b]
        assert abs(inside[0].start_sample - a) <= slack and abs(inside[-1].end_sample - b) <= slack
    in_span = np.zeros(len(x), bool)
    for s in spans:
        in_span[s.start_sample : s.end_sample] = True
    assert in_span[np.abs(x) > 0.05].all()  # no voiced sample is left out (pauses inside a clip may be)
    assert sum(s.samples for s in spans) < len(x) - SAMPLE_RATE * sum(gaps) + 4 * slack


def test_silence_and_faint_noise_have_no_speech(vad):
    noise = (np.random.default_rng().standard_normal(3 * SAMPLE_RATE) * 0.005).astype(np.float32)
    assert list(iter_speech_spans(silence(3.0), TranscribeOptions(), vad)) == []
    assert list(iter_speech_spans(noise, TranscribeOptions(), vad)) == []


def test_model_leaves_torch_threads_alone():
    before = torch.get_num_threads()
    model = VadModel()
    model.probs(np.zeros((3, FRAME), np.float32), model.new_state())
    assert torch.get_num_threads() == before
