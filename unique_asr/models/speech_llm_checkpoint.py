"""Speech-LLM weights: transformers' Qwen2-Audio / Voxtral state dicts mapped by name, any Llama/Qwen2 causal LM,
and our own format (a folder with `config.json` + `model.safetensors`).

Name mapping (transformers `...ForConditionalGeneration` -> ours):
    model.audio_tower.*                     audio.encoder.* (Whisper names, `unique_asr.models.checkpoint.hf_name_map`)
    model.audio_tower.layer_norm            projector.norm (Qwen2-Audio: the norm runs after pooling)
    model.multi_modal_projector.linear      projector.linear                 (Qwen2-Audio)
    model.multi_modal_projector.linear_1/2  projector.linear_1 / linear_2    (Voxtral)
    model.language_model.* + lm_head        llm.* (same names as transformers' Llama/Qwen2 decoders)
"""

from __future__ import annotations

import json
import os

import torch
from safetensors.torch import save_file

from unique_asr.errors import ModelError
from unique_asr.models.checkpoint import hf_name_map, read_safetensors
from unique_asr.models.llm import LLM, LLMConfig
from unique_asr.models.speech_llm import ProjectorConfig, SpeechLLM, SpeechLLMConfig, encoder_config
from unique_asr.models.whisper import WhisperConfig

FORMAT = "unique-asr-speech-llm"
FORMAT_VERSION = 1


def _take(state: dict[str, torch.Tensor], names: dict[str, str], what: str) -> dict[str, torch.Tensor]:
    """{ours: state[theirs]} for names {theirs: ours}; ModelError naming a few missing weights."""
    missing = [k for k in names if k not in state]
    if missing:
        raise ModelError(f"{what} checkpoint lacks {len(missing)} weights, e.g. {missing[:3]}")
    return {ours: state[theirs] for theirs, ours in names.items()}


def llm_state_from_hf(hf_state: dict[str, torch.Tensor], config: LLMConfig, prefix: str = "model.") -> dict:
    """Our `LLM` state dict from a transformers Llama/Qwen2 decoder whose weights sit under `prefix`
    (`model.` for ...ForCausalLM, `model.language_model.` inside Qwen2-Audio / Voxtral); lm_head at the root."""
    names = {k: k.removeprefix(prefix) for k in hf_state if k.startswith(prefix) and not k.endswith("rotary_emb.inv_freq")}
    state = _take(hf_state, names, "language model")
    if "lm_head.weight" in hf_state:
        state["lm_head.weight"] = hf_state["lm_head.weight"]
    elif config.tie_word_embeddings:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    return state


def encoder_state_from_hf(hf_state: dict[str, torch.Tensor], config: WhisperConfig, prefix: str) -> dict:
    """Our `AudioEncoder` state dict (names `encoder.*`) from a transformers Whisper-style encoder under `prefix`
    (e.g. `model.audio_tower.`); the final layer_norm included."""
    whisper = {k: v for k, v in hf_name_map(config).items() if k.startswith("encoder.")}
    return _take(hf_state, {prefix + k.removeprefix("encoder."): v for k, v in whisper.items()}, "audio encoder")


def _encoder_config(audio) -> WhisperConfig:
    """WhisperConfig of a transformers Qwen2-Audio / Voxtral encoder config (FFN width must be 4·d, as ours)."""
    if audio.encoder_ffn_dim != 4 * audio.d_model:
        raise ModelError(f"encoder FFN width {audio.encoder_ffn_dim} != 4 x d_model {audio.d_model}")
    return encoder_config(n_mels=audio.num_mel_bins, n_audio_ctx=audio.max_source_positions, d_model=audio.d_model,
                          heads=audio.encoder_attention_heads, layers=audio.encoder_layers)


def config_from_hf(hf_config) -> SpeechLLMConfig:
    """SpeechLLMConfig of a transformers `Qwen2AudioConfig` or `VoxtralConfig`."""
    kind = {"qwen2_audio": ProjectorConfig("pool", 2), "voxtral": None}
    if hf_config.model_type not in kind:
        raise ModelError(f"model type {hf_config.model_type!r} is not a supported speech-LLM (qwen2_audio, voxtral)")
    audio = hf_config.audio_config
    projector = kind[hf_config.model_type] or ProjectorConfig(
        "stack", audio.encoder_ffn_dim // audio.d_model, hf_config.projector_hidden_act)
    return SpeechLLMConfig(_encoder_config(audio), LLMConfig.from_hf(hf_config.text_config), projector,
                           int(hf_config.audio_token_id))


def canonical_hf_names(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Qwen2-Audio / Voxtral state dict to transformers' in-memory names whatever wrapper prefixes it
    carries (hub files: `audio_tower.*`, `language_model.model.*`, `language_model.lm_head.*`; in memory:
    `model.audio_tower.*`, `model.language_model.*`, `lm_head.*`)."""
    out = {}
    for name, tensor in hf_state.items():
        for part in ("audio_tower.", "multi_modal_projector."):
            if part in name:
                name = "model." + part + name.split(part, 1)[1]
                break
        else:
            if name.endswith("lm_head.weight"):
                name = "lm_head.weight"
            elif "language_model." in name:
                inner = name.split("language_model.", 1)[1]
                while inner.startswith("model."):
                    inner = inner.removeprefix("model.")
                name = "model.language_model." + inner
        out[name] = tensor
    return out


def from_hf_state_dict(hf_state: dict[str, torch.Tensor], hf_config) -> tuple[SpeechLLMConfig, dict]:
    """(our config, our state dict) from a Qwen2AudioForConditionalGeneration / VoxtralForConditionalGeneration
    state dict (in-memory or hub names, see `canonical_hf_names`) and its transformers config."""
    config = config_from_hf(hf_config)
    hf_state = canonical_hf_names(hf_state)
    enc = encoder_state_from_hf(hf_state, config.encoder, "model.audio_tower.")
    state = {f"audio.{k}": v for k, v in enc.items()}
    if config.projector.kind == "pool":
        for p in ("weight", "bias"):
            state[f"projector.norm.{p}"] = state.pop(f"audio.encoder.ln_post.{p}")
        proj = {f"model.multi_modal_projector.linear.{p}": f"linear.{p}" for p in ("weight", "bias")}
    else:
        proj = {f"model.multi_modal_projector.{n}.weight": f"{n}.weight" for n in ("linear_1", "linear_2")}
    state.update({f"projector.{k}": v for k, v in _take(hf_state, proj, "projector").items()})
    llm = llm_state_from_hf(hf_state, config.llm, "model.language_model.")
    state.update({f"llm.{k}": v for k, v in llm.items()})
    return config, state


def _no_init():
    """transformers' context that skips torch's random initialisation (every weight is loaded right after:
    drawing them first is the slowest part of building a multi-billion-parameter model on the CPU)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers < 5
        from transformers.modeling_utils import no_init_weights
    return no_init_weights()


def _build(config: SpeechLLMConfig, state: dict[str, torch.Tensor], dtype: torch.dtype | None) -> SpeechLLM:
    with _no_init():
        model = SpeechLLM(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ModelError(f"speech-LLM weights do not fit the config: {' '.join(str(err).split())[:400]}") from None
    return model.to(dtype).eval() if dtype is not None else model.eval()


def load_hf_speech_llm(folder: str, dtype: torch.dtype | None = None) -> SpeechLLM:
    """A local transformers Qwen2-Audio or Voxtral folder (config.json + safetensors) as our SpeechLLM."""
    from transformers import AutoConfig

    config, state = from_hf_state_dict(read_safetensors(folder), AutoConfig.from_pretrained(folder))
    return _build(config, state, dtype)


def load_hf_llm(folder: str, dtype: torch.dtype | None = None) -> LLM:
    """A local transformers Llama/Qwen2 causal-LM folder (config.json + safetensors) as our LLM."""
    from transformers import AutoConfig

    config = LLMConfig.from_hf(AutoConfig.from_pretrained(folder))
    model = LLM(config)
    model.load_state_dict(llm_state_from_hf(read_safetensors(folder), config, "model."))
    return model.to(dtype).eval() if dtype is not None else model.eval()


def compose(encoder_state: dict[str, torch.Tensor], encoder: WhisperConfig, llm: LLM, projector: ProjectorConfig,
            audio_token_id: int, seed: int = 0) -> SpeechLLM:
    """A SpeechLLM from a Whisper encoder (our `WhisperModel` state dict: its `encoder.*` weights) and any
    LLM; the projector is freshly initialised (seeded), to be trained."""
    config = SpeechLLMConfig(encoder, llm.config, projector, audio_token_id)
    torch.manual_seed(seed)
    model = SpeechLLM(config)
    enc = {k: v for k, v in encoder_state.items() if k.startswith("encoder.")}
    if projector.kind == "pool":  # the encoder's final norm runs after pooling
        model.projector.norm.load_state_dict({p: enc.pop(f"encoder.ln_post.{p}") for p in ("weight", "bias")})
    model.audio.load_state_dict(enc)
    model.llm.load_state_dict(llm.state_dict())
    return model


def save_speech_llm(model: SpeechLLM, folder: str) -> None:
    """Our format: folder/config.json (format, version, SpeechLLMConfig) + folder/model.safetensors."""
    os.makedirs(folder, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if model.config.llm.tie_word_embeddings:
        state.pop("llm.lm_head.weight")
    save_file(state, os.path.join(folder, "model.safetensors"))
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump({"format": FORMAT, "version": FORMAT_VERSION, **model.config.to_dict()}, f, indent=2)


def load_speech_llm(folder: str, dtype: torch.dtype | None = None) -> SpeechLLM:
    """Inverse of `save_speech_llm`; ModelError on another format, a newer version or mismatched weights."""
    path = os.path.join(folder, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ModelError(f"{path}: cannot read speech-LLM config ({err})") from err
    if raw.get("format") != FORMAT or raw.get("version", 0) > FORMAT_VERSION:
        raise ModelError(f"{path}: not a {FORMAT} v<={FORMAT_VERSION} config (got {raw.get('format')!r} "
                         f"v{raw.get('version')})")
    config = SpeechLLMConfig.from_dict(raw)
    state = read_safetensors(folder)
    if config.llm.tie_word_embeddings:
        state["llm.lm_head.weight"] = state["llm.embed_tokens.weight"]
    return _build(config, state, dtype)
