"""Family registry behind `load_model`: which model family a checkpoint is, and how to load it.

A `--model` value is resolved to a bundled name, a local folder or a hub id (unique_asr.models.registry); the
family is read from the checkpoint's config.json: our own speech-LLM format by its "format" key, otherwise
transformers' `model_type` or, failing that, `architectures`. Adding a family = one module with a loader plus
one `Family` entry below.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from unique_asr.errors import ModelError
from unique_asr.model_names import WHISPER_NAMES
from unique_asr.models.registry import ModelSource, resolve


@dataclass(frozen=True)
class Family:
    """name; model_types / architectures: config.json values that mean this family; load(folder, source, device,
    dtype, model_dir) -> (model, tokenizer, ModelInfo); hub_files: what to fetch of a hub repository."""

    name: str
    model_types: tuple[str, ...]
    architectures: tuple[str, ...]
    load: Callable
    hub_files: tuple[str, ...] = ()


def _load_whisper(folder: str, source: ModelSource, device, dtype, model_dir):
    from unique_asr.models.loader import load_whisper

    return load_whisper(folder, device=device, dtype=dtype, model_dir=model_dir, source=source)


def _load_speech_llm(family: str):
    def load(folder: str, source: ModelSource, device, dtype, model_dir):
        from unique_asr.models.speech_loader import load_speech_family

        return load_speech_family(family, folder, source, device=device, dtype=dtype)

    return load


_SPEECH_HUB_FILES = ("config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer*", "tekken.json",
                     "vocab.json", "merges.txt", "special_tokens_map.json", "chat_template*")

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("whisper", ("whisper",), ("WhisperForConditionalGeneration",), _load_whisper),
        Family("voxtral", ("voxtral",), ("VoxtralForConditionalGeneration",), _load_speech_llm("voxtral"),
               _SPEECH_HUB_FILES),
        Family("qwen2_audio", ("qwen2_audio",), ("Qwen2AudioForConditionalGeneration",),
               _load_speech_llm("qwen2_audio"), _SPEECH_HUB_FILES),
        Family("speech-llm", (), (), _load_speech_llm("speech-llm"), _SPEECH_HUB_FILES),
    )
}
OWN_FORMAT = "unique-asr-speech-llm"


def read_config(folder: str) -> dict:
    """config.json of a checkpoint folder; ModelError when missing or not JSON."""
    path = os.path.join(folder, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except FileNotFoundError:
        raise ModelError(f"{folder}: no config.json (not a model folder)") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: unreadable ({exc})") from None
    if not isinstance(config, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return config


def family_of(config: dict, where: str = "model") -> Family:
    """The family a config.json describes (see the module docstring); ModelError naming what is supported."""
    if config.get("format") == OWN_FORMAT:
        return FAMILIES["speech-llm"]
    model_type = config.get("model_type")
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    for family in FAMILIES.values():
        if set(config.get("architectures") or ()) & set(family.architectures):
            return family
    known = sorted(t for f in FAMILIES.values() for t in f.model_types)
    raise ModelError(f"{where}: model type {model_type!r} is not supported (families: {', '.join(known)}, "
                     f"or the {OWN_FORMAT} format)")


def _hub_folder(repo_id: str, patterns: tuple[str, ...], cache_dir: str | None = None) -> str:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return snapshot_download(repo_id, allow_patterns=list(patterns), cache_dir=cache_dir)
    except (LocalEntryNotFoundError, RepositoryNotFoundError, HfHubHTTPError, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{repo_id}: cannot fetch from the Hugging Face hub (offline or unknown id: {first_line}); "
                         "offline models: tiny.en, base") from None


def load(name_or_path: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
         model_dir: str | None = None):
    """(model, tokenizer, ModelInfo) of a bundled name, a Whisper short name, a local folder or a hub id, by its
    family. model_dir: where downloads and converted weights are kept.

    The model implements the family interface (unique_asr.models.family). Raises ModelError on anything
    missing, unsupported, corrupt or unreachable.
    """
    start = time.perf_counter()
    source = resolve(name_or_path)
    if source.kind == "bundled" or name_or_path in WHISPER_NAMES:
        family, folder = FAMILIES["whisper"], name_or_path
    elif source.kind == "folder":
        folder = source.location
        family = family_of(read_config(folder), name_or_path)
    else:
        config_folder = _hub_folder(source.location, ("config.json",), model_dir)
        family = family_of(read_config(config_folder), name_or_path)
        folder = (source.location if family.name == "whisper"
                  else _hub_folder(source.location, family.hub_files, model_dir))
    model, tokenizer, info = family.load(folder, source, device, dtype, model_dir)
    return model, tokenizer, info.with_load_time(time.perf_counter() - start)
