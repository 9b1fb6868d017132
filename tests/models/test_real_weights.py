"""The bundled OpenAI weights, converted: logits equal transformers' with the same weights; speech decodes."""

from __future__ import annotations

import shutil
import subprocess

import jiwer
import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from transformers import WhisperConfig as HFWhisperConfig
from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration
from whisper_helpers import greedy_text

from unique_asr.models import SelfAttentionCache, load_whisper
from unique_asr.models.checkpoint import to_hf_state_dict

TEXT = "Today we will talk about the weather, the river, and the small town near the mountains."
MODELS = ["tiny.en", "base"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNIQUE_ASR_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """TEXT synthesised by espeak-ng (en-us formant voice, 150 wpm), 16 kHz mono float32."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    wav = tmp_path_factory.mktemp("speech") / "fox.wav"
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), TEXT], check=True, capture_output=True
    )
    audio, sr = sf.read(wav, dtype="float32")
    return soxr.resample(audio, sr, 16000).astype(np.float32)


def _mel(audio: np.ndarray, n_mels: int) -> torch.Tensor:
    features = WhisperFeatureExtractor(feature_size=n_mels)(audio, sampling_rate=16000, return_tensors="np")
    return torch.from_numpy(features.input_features)


def _normalise(text: str) -> str:
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


@pytest.mark.parametrize("name", MODELS)
@torch.no_grad()
def test_converted_weights_match_transformers(cache, name):
    model, tokenizer, info = load_whisper(name)
    with torch.device("meta"):  # skip random init: every weight is assigned below
        hf = WhisperForConditionalGeneration(
            HFWhisperConfig(**info.config.to_hf_kwargs(), attn_implementation="sdpa")
        )
    hf.load_state_dict(to_hf_state_dict(model.state_dict(), info.config), strict=True, assign=True)
    hf.eval()
    rng = np.random.default_rng()
    audio = (0.1 * rng.standard_normal(16000 * 5) * np.sin(np.linspace(0, 60, 16000 * 5))).astype(np.float32)
    mel = _mel(audio, info.config.n_mels)
    tokens = torch.tensor([tokenizer.sot_sequence("en") + tokenizer.encode(" and so on")])
    ref = hf(input_features=mel, decoder_input_ids=tokens)
    enc = model.encode(mel)
    torch.testing.assert_close(enc, ref.encoder_last_hidden_state, atol=1e-3, rtol=1e-3)
    logits = model.decode(tokens, SelfAttentionCache.allocate(info.config, 1), model.cross_memory(enc))
    torch.testing.assert_close(logits, ref.logits, atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize("name", MODELS)
@torch.no_grad()
def test_greedy_transcribes_synthetic_speech(cache, speech, name):
    model, tokenizer, info = load_whisper(name)
    text = greedy_text(model, tokenizer, model.encode(_mel(speech, info.config.n_mels)))
    assert jiwer.wer(_normalise(TEXT), _normalise(text)) <= 0.15, text
