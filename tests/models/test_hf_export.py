"""The fine-tuning export is a Whisper folder transformers loads: WhisperForConditionalGeneration gives our
logits, WhisperProcessor our features, and generate() with the folder's generation_config transcribes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from speech_data import AUSTEN, clip
from speech_data import text as reference_text
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from unique_asr.audio import log_mel
from unique_asr.eval.normalise import normalise
from unique_asr.models.checkpoint import verified_path
from unique_asr.models.loader import load_whisper
from unique_asr.models.registry import BUNDLED
from unique_asr.train.export import export_whisper


@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_export_loads_in_transformers(name, tmp_path):
    model, tokenizer, _ = load_whisper(name)
    folder = export_whisper(model, verified_path(BUNDLED[name].tokenizer), tmp_path / name)
    hf = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    processor = WhisperProcessor.from_pretrained(folder)

    audio = clip(AUSTEN[0])
    features = processor(audio, sampling_rate=16000, return_tensors="pt").input_features
    torch.testing.assert_close(features, log_mel(torch.from_numpy(audio)), rtol=1e-4, atol=1e-4)

    tokens = torch.tensor([tokenizer.sot_sequence("en" if tokenizer.is_multilingual else None)])
    with torch.no_grad():
        ours = model.forward_train(features, tokens)
        theirs = hf(input_features=features, decoder_input_ids=tokens).logits
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-3)

    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation["decoder_start_token_id"] == tokenizer.sot and generation["eos_token_id"] == tokenizer.eot
    assert generation["no_timestamps_token_id"] == tokenizer.no_timestamps
    assert generation["is_multilingual"] == tokenizer.is_multilingual
    kwargs = {"language": "en", "task": "transcribe"} if tokenizer.is_multilingual else {}
    with torch.no_grad():
        out = hf.generate(features, max_new_tokens=120, **kwargs)
    text = processor.batch_decode(out, skip_special_tokens=True)[0]
    wanted = normalise(reference_text(AUSTEN[0])).split()
    got = normalise(text).split()
    assert len(set(got) & set(wanted)) >= 0.8 * len(set(wanted)), (text, reference_text(AUSTEN[0]))
    assert np.isfinite(theirs.numpy()).all()
