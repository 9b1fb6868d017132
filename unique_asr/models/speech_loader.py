"""Load a speech-LLM family checkpoint folder: weights (unique_asr.models.speech_llm_checkpoint), tokenizer and
transcription prompt (unique_asr.models.speech_family) -> the family interface's model object."""

from __future__ import annotations

import functools

import torch

from unique_asr.config import SparsityConfig
from unique_asr.errors import ModelError
from unique_asr.models.loader import ModelInfo
from unique_asr.models.registry import ModelSource
from unique_asr.models.speech_family import PROMPTS, SpeechLLMModel, SpeechTokenizer, own_prompt
from unique_asr.models.speech_llm_checkpoint import (
    _build,
    from_hf_state_dict,
    load_speech_llm,
    read_safetensors,
)


def load_speech_family(family: str, folder: str, source: ModelSource, *, device, dtype: torch.dtype):
    """(SpeechLLMModel, SpeechTokenizer, ModelInfo) of a Voxtral / Qwen2-Audio / own-format folder."""
    from unique_asr.models.families import read_config

    raw = read_config(folder)
    if family == "speech-llm":
        net = load_speech_llm(folder)
        tokenizer = SpeechTokenizer(folder)
        prompt = own_prompt(tokenizer, raw.get("prompt"), folder)  # no language field in our format

        def prompt_for(language):
            return prompt
    else:
        from transformers import AutoConfig

        try:
            hf_config = AutoConfig.from_pretrained(folder)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{folder}: unusable config.json ({str(exc).splitlines()[0]})") from None
        try:
            config, state = from_hf_state_dict(read_safetensors(folder), hf_config)
        except (AttributeError, TypeError, ValueError) as exc:
            raise ModelError(f"{folder}: config.json does not describe a {family} model ({exc})") from None
        net = _build(config, state, None)
        tokenizer = SpeechTokenizer(folder)
        build = PROMPTS[family]
        prompt_for = functools.partial(build, tokenizer, config.audio_token_id, folder=folder)
    prompt_for(None)  # a checkpoint whose tokenizer cannot build the prompt fails here, at load time
    net = net.to(device=device, dtype=dtype).eval()
    model = SpeechLLMModel(family, net, tokenizer, prompt_for, SparsityConfig())
    info = ModelInfo(source.name, source.kind, net.config, folder, False, 0.0, family=family)
    return model, tokenizer, info
