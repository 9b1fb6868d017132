"""`load_whisper`: name or path -> (WhisperModel, WhisperTokenizer, ModelInfo), converting once if needed."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace

import torch

from unique_asr.errors import ModelError
from unique_asr.models import checkpoint
from unique_asr.models.ct2 import read_ct2
from unique_asr.models.generation import check_and_apply, read_generation_config
from unique_asr.models.registry import BUNDLED, DEFAULT_MODEL, BundledModel, ModelSource, resolve
from unique_asr.models.tokenizer import WhisperTokenizer
from unique_asr.models.whisper import WhisperConfig, WhisperModel
from unique_asr.model_names import default_alignment_heads, known_alignment_heads


@dataclass(frozen=True)
class ModelInfo:
    """What was loaded. source: "bundled" | "folder" | "hub"; weights: the safetensors/bin file read;
    converted: True when this call ran the CTranslate2 conversion (False: cache hit or not bundled);
    alignment_heads: decoder (layer, head) pairs for word timestamps, from the folder's
    generation_config.json, else OpenAI's published table, else the upper half of the layers; config: the
    family's model config; family: the registry family (unique_asr.models.families)."""

    name: str
    source: str
    config: object
    weights: str
    converted: bool
    load_s: float
    alignment_heads: tuple[tuple[int, int], ...] = ()
    family: str = "whisper"

    def with_load_time(self, seconds: float) -> "ModelInfo":
        return replace(self, load_s=seconds)


def bundled_cache_dir(model: BundledModel, model_dir: str | None = None) -> str:
    """Cache folder of a bundled model's conversion, keyed by the pinned hash of its first weight part."""
    root = model_dir or checkpoint.cache_root()
    return os.path.join(root, "whisper", f"{model.name}-{model.weights[0].sha256[:16]}")


def _load_bundled(model: BundledModel, model_dir: str | None) -> tuple[WhisperConfig, dict, str, str, bool]:
    directory = bundled_cache_dir(model, model_dir)
    cached = checkpoint.load_converted(directory)
    pinned = {p.path: p.sha256 for p in model.weights}
    if cached is not None and cached[2].get("source_sha256") == pinned:
        config, state, _ = cached
        converted = False
    else:
        parts = [checkpoint.verified_path(p) for p in model.weights]
        config, state = checkpoint.convert_ct2(read_ct2(parts))
        checkpoint.save_converted(directory, config, state, {"name": model.name, "source_sha256": pinned})
        converted = True
    tokenizer = checkpoint.verified_path(model.tokenizer)
    return config, state, tokenizer, os.path.join(directory, "model.safetensors"), converted


def load_whisper(
    name_or_path: str = DEFAULT_MODEL, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    model_dir: str | None = None, source: ModelSource | None = None,
) -> tuple[WhisperModel, WhisperTokenizer, ModelInfo]:
    """Load a Whisper model in eval mode on `device` with parameters in `dtype`.

    name_or_path: a bundled name (offline: "tiny.en", "base"), a short name of a published model ("small",
    "large-v3", "turbo", "distil-large-v3", ...: its hub id, online once), a local Hugging Face Whisper
    folder, or a hub id. model_dir: where hub downloads and converted weights are kept (default: the
    huggingface_hub cache and ~/.cache/unique-asr). Raises ModelError on anything missing, corrupt or
    unreachable.
    """
    start = time.perf_counter()
    source = source or resolve(name_or_path)
    converted = False
    generation = None
    if source.kind == "bundled":
        config, state, tok_path, weights, converted = _load_bundled(BUNDLED[source.name], model_dir)
    else:
        folder = (source.location if source.kind == "folder"
                  else checkpoint.download_hub(source.location, cache_dir=model_dir))
        generation = read_generation_config(folder)
        config, state = checkpoint.load_hf_folder(folder)
        tok_path = os.path.join(folder, "tokenizer.json")
        if not os.path.isfile(tok_path):
            raise ModelError(f"{folder}: no tokenizer.json")
        weights = folder
    with torch.device("meta"):
        model = WhisperModel(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelError(f"{name_or_path}: weights do not fit the Whisper architecture ({exc})") from None
    model = model.to(device=device, dtype=dtype).eval()
    tokenizer = WhisperTokenizer(tok_path, config.n_vocab)
    if generation is not None:
        check_and_apply(generation, tokenizer, config.n_text_layer, config.n_text_head, name_or_path)
    heads = ((generation.alignment_heads if generation else None) or known_alignment_heads(source.location)
             or default_alignment_heads(config.n_text_layer, config.n_text_head))
    info = ModelInfo(source.name, source.kind, config, weights, converted, time.perf_counter() - start, heads)
    return model, tokenizer, info
