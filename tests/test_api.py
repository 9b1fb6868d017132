"""Python API: load_model / Transcriber.transcribe (lazy, overrides routed) and typed errors for bad input."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
import soxr
import speech_data
import torch

import unique_asr
from unique_asr.api import Transcriber, load_model, resolve_device, resolve_dtype
from unique_asr.config import SparsityConfig
from unique_asr.errors import AudioError, ModelError
from unique_asr.types import Segment


SPEECH = "austen_0930"  # 'He might even have been made amiable himself.'


@pytest.fixture(scope="module")
def model():
    return load_model("tiny.en", device="cpu")


@pytest.fixture(scope="module")
def speech_file(tmp_path_factory):
    """A recorded clip written at 22.05 kHz (the API resamples)."""
    path = os.path.join(tmp_path_factory.mktemp("api"), "speech.wav")
    sf.write(path, soxr.resample(speech_data.clip(SPEECH), 16000, 22050), 22050)
    return path


def test_load_model_is_exported_lazily():
    assert unique_asr.load_model is load_model and "load_model" in unique_asr.__all__


def test_transcribe_is_lazy_and_routes_overrides(model, speech_file):
    assert (
        isinstance(model, Transcriber)
        and model.device == torch.device("cpu")
        and model.dtype == torch.float32
    )
    segments, info = model.transcribe(speech_file, beam_size=2, without_timestamps=True)
    assert info.windows == 0 and info.decoded_s == 0.0  # nothing decoded before the iterator runs
    assert info.options["decode"]["beam_size"] == 2 and info.attention["mode"] == "dense"
    assert info.language == "en" and info.model == "tiny.en"
    first = next(segments)
    assert isinstance(first, Segment) and info.windows == 1 and info.decoded_s > 2.0
    assert first.text.strip() == "He might even have been made amiable himself."
    assert 0.0 <= first.start < first.end <= info.duration_s  # no timestamps: the window's span
    assert list(segments) == []


def test_bad_inputs_raise_typed_errors(model, tmp_path):
    text_file = tmp_path / "notes.wav"
    text_file.write_text("this is not audio\n")
    empty = tmp_path / "empty.flac"
    empty.touch()
    truncated = tmp_path / "cut.wav"
    sf.write(truncated, np.zeros(16000, np.float32), 16000)
    truncated.write_bytes(truncated.read_bytes()[:30])
    for bad in (tmp_path / "missing.wav", text_file, empty, truncated):
        with pytest.raises(AudioError, match=bad.name):
            segments, _ = model.transcribe(str(bad))
            list(segments)
    for array in (np.array([], np.float32), np.array([0.0, np.nan], np.float32), np.array(["a", "b"])):
        with pytest.raises(AudioError):
            model.transcribe(array)
    with pytest.raises(ValueError):
        model.transcribe(np.zeros(16000, np.float32), strategy="sideways")
    with pytest.raises(ValueError):
        model.transcribe(np.zeros(16000, np.float32), no_such_option=1)


def test_unknown_model_is_a_model_error():
    with pytest.raises(ModelError):
        load_model("no-such-model-name", device="cpu")


def test_sparse_attention_runs_through_the_api(model, speech_file):
    """UNIQUE cross-attention (16-frame pages, 384 of 1500 frames) per call, and as the loaded default."""
    segments, info = model.transcribe(speech_file, mode="unique", page_size=16, budget=384, beam_size=2)
    assert [s.text.strip() for s in segments] == ["He might even have been made amiable himself."]
    assert (info.attention["mode"], info.attention["budget"], info.attention["page_size"]) == (
        "unique",
        384,
        16,
    )
    sparse = SparsityConfig(mode="unique", page_size=16, budget=384)
    loaded = load_model("tiny.en", device="cpu", sparsity=sparse)
    _, info = loaded.transcribe(speech_file)
    assert (info.attention["mode"], info.attention["budget"]) == ("unique", 384)
    assert loaded.transcribe(speech_file, mode="dense")[1].attention["mode"] == "dense"


def test_device_and_dtype_resolution():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError):
        resolve_dtype("float8", torch.device("cpu"))
    with pytest.raises(ValueError):
        resolve_device("tpu:7")
