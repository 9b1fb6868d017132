"""In-memory audio (issue 18): with `sample_rate`, any rate, channel layout and sample type is resampled and
gives the file's transcript; without it only 16 kHz mono is taken, and everything else is a typed one-line
error."""

from __future__ import annotations

import numpy as np
import pytest
import soxr
import torch

import speech_data
from unique_asr.api import load_model
from unique_asr.arrays import to_16k_mono
from unique_asr.errors import AudioError

NAME = "austen_0890"


@pytest.fixture(scope="module")
def model():
    return load_model("tiny.en", device="cpu")


@pytest.fixture(scope="module")
def file_text(model):
    segments, _ = model.transcribe(str(speech_data.path(NAME)))
    return "".join(s.text for s in segments)


def stereo_44k() -> np.ndarray:
    """The clip at 44.1 kHz as [samples, 2] float64, the channels at different levels (their mean is the clip)."""
    x = soxr.resample(speech_data.clip(NAME).astype(np.float64), 16000, 44100)
    return np.stack([1.25 * x, 0.75 * x], axis=1)


def text(model, audio, **kwargs) -> str:
    segments, _ = model.transcribe(audio, **kwargs)
    return "".join(s.text for s in segments)


def test_44k_stereo_array_with_its_rate_gives_the_files_text(model, file_text):
    assert "cold hearted" in file_text.replace("-", " ").lower()
    assert text(model, stereo_44k(), sample_rate=44100) == file_text


def test_int16_tensor_channels_first_with_its_rate(model, file_text):
    pcm = torch.from_numpy(np.round(stereo_44k().T * 0.5 * 32767).astype(np.int16))  # [2, samples]
    assert text(model, pcm, sample_rate=44100) == file_text


def test_list_and_16k_mono_without_a_rate(model, file_text):
    clip = speech_data.clip(NAME)
    assert text(model, clip.tolist()) == file_text  # a list of floats, 16 kHz mono: taken as it is


def test_layouts_and_sample_types_convert_alike():
    x = stereo_44k()
    ref = to_16k_mono(x, 44100)
    assert len(ref) == pytest.approx(len(speech_data.clip(NAME)), abs=2)
    assert np.abs(ref - speech_data.clip(NAME)[: len(ref)]).max() < 0.02
    np.testing.assert_allclose(to_16k_mono(torch.from_numpy(x.T.copy()), 44100), ref, atol=1e-6)
    pcm = np.round(x * 0.5 * 32767).astype(np.int16)
    np.testing.assert_allclose(to_16k_mono(pcm, 44100), 0.5 * ref, atol=2e-4)
    u8 = (np.round(x[:, :1] * 0.5 * 127) + 128).astype(np.uint8)
    np.testing.assert_allclose(to_16k_mono(u8, 44100), 1.25 * 0.5 * 127 / 128 * ref, atol=1.5e-2)  # centred on 128


@pytest.mark.parametrize(
    "audio, rate, error, words",
    [
        (np.zeros((16000, 2), np.float32), None, AudioError, "2 channels and no sample_rate"),
        ([1, 2, 3] * 1000, None, AudioError, "int64"),
        (["a", "b"], None, AudioError, "numeric"),
        ([[0.0, 0.1], [0.2]], None, AudioError, "not an array"),
        (np.zeros((2, 3, 4), np.float32), None, AudioError, "shape"),
        (np.zeros((100, 100), np.float32), 16000, AudioError, "samples from channels"),
        (np.zeros(0, np.float32), None, AudioError, "no audio samples"),
        (np.array([0.0, np.nan] * 100, np.float32), None, AudioError, "NaN"),
        (np.zeros(16000, np.float32), 0, ValueError, "sample_rate"),
        (np.zeros(16000, np.float32), 44100.5, ValueError, "sample_rate"),
        (np.zeros(16000, np.float32), "44100", ValueError, "sample_rate"),
    ],
)
def test_bad_arrays_are_typed_one_line_errors(audio, rate, error, words):
    with pytest.raises(error, match=words) as caught:
        to_16k_mono(audio, rate)
    assert "\n" not in str(caught.value)


def test_a_rate_for_a_file_is_refused(model):
    with pytest.raises(ValueError, match="sample_rate is for in-memory"):
        model.transcribe(str(speech_data.path(NAME)), sample_rate=44100)
