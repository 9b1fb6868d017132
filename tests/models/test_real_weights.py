"""The bundled OpenAI weights, converted: logits equal transformers' with the same weights; speech decodes."""

from __future__ import annotations

import numpy as np
import pytest
import speech_data
import torch
from transformers import WhisperConfig as HFWhisperConfig
from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration
from whisper_helpers import greedy_text

from unique_asr.models import SelfAttentionCache, load_whisper
from unique_asr.models.checkpoint import to_hf_state_dict

CLIP = "austen_0870"  # recorded speech, 7.1 s (tests/data/speech)
MODELS = ["tiny.en", "base"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNIQUE_ASR_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def speech():
    """A recorded utterance, 16 kHz mono float32."""
    return speech_data.clip(CLIP)


def _mel(audio: np.ndarray, n_mels: int) -> torch.Tensor:
    features = WhisperFeatureExtractor(feature_size=n_mels)(audio, sampling_rate=16000, return_tensors="np")
    return torch.from_numpy(features.input_features)


@pytest.mark.parametrize("name", MODELS)
@torch.no_grad()
def test_converted_weights_match_transformers(cache, speech, name):
    model, tokenizer, info = load_whisper(name)
    with torch.device("meta"):  # skip random init: every weight is assigned below
        hf = WhisperForConditionalGeneration(
            HFWhisperConfig(**info.config.to_hf_kwargs(), attn_implementation="sdpa")
        )
    hf.load_state_dict(to_hf_state_dict(model.state_dict(), info.config), strict=True, assign=True)
    hf.eval()
    mel = _mel(speech, info.config.n_mels)
    tokens = torch.tensor([tokenizer.sot_sequence("en") + tokenizer.encode(" And Mr. John Dashwood had then")])
    ref = hf(input_features=mel, decoder_input_ids=tokens)
    enc = model.encode(mel)
    torch.testing.assert_close(enc, ref.encoder_last_hidden_state, atol=1e-3, rtol=1e-3)
    logits = model.decode(tokens, SelfAttentionCache.allocate(info.config, 1), model.cross_memory(enc))
    torch.testing.assert_close(logits, ref.logits, atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize("name", MODELS)
@torch.no_grad()
def test_greedy_transcribes_recorded_speech(cache, speech, name):
    model, tokenizer, info = load_whisper(name)
    text = greedy_text(model, tokenizer, model.encode(_mel(speech, info.config.n_mels)))
    assert speech_data.wer(text, speech_data.text(CLIP)) <= 0.05, text
