"""`load_whisper`: name or path -> (WhisperModel, WhisperTokenizer, ModelInfo), converting once if needed."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

from unique_asr.errors import ModelError
from unique_asr.models import checkpoint
from unique_asr.models.ct2 import read_ct2
from unique_asr.models.registry import BUNDLED, DEFAULT_MODEL, BundledModel, resolve
from unique_asr.models.tokenizer import WhisperTokenizer
from unique_asr.models.whisper import WhisperConfig, WhisperModel


@dataclass(frozen=True)
class ModelInfo:
    """What was loaded. source: "bundled" | "folder" | "hub"; weights: the safetensors/bin file read;
    converted: True when this call ran the CTranslate2 conversion (False: cache hit or not bundled)."""

    name: str
    source: str
    config: WhisperConfig
    weights: str
    converted: bool
    load_s: float


def bundled_cache_dir(model: BundledModel) -> str:
    """Cache folder of a bundled model's conversion, keyed by the pinned hash of its first weight part."""
    return os.path.join(checkpoint.cache_root(), "whisper", f"{model.name}-{model.weights[0].sha256[:16]}")


def _load_bundled(model: BundledModel) -> tuple[WhisperConfig, dict, str, str, bool]:
    directory = bundled_cache_dir(model)
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
    name_or_path: str = DEFAULT_MODEL, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[WhisperModel, WhisperTokenizer, ModelInfo]:
    """Load a Whisper model in eval mode on `device` with parameters in `dtype`.

    name_or_path: a bundled name (offline: "tiny.en", "base"), a local Hugging Face Whisper folder, or a hub
    id (online only). Raises ModelError on anything missing, corrupt or unreachable.
    """
    start = time.perf_counter()
    source = resolve(name_or_path)
    converted = False
    if source.kind == "bundled":
        config, state, tok_path, weights, converted = _load_bundled(BUNDLED[source.name])
    else:
        folder = source.location if source.kind == "folder" else checkpoint.download_hub(source.location)
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
    info = ModelInfo(source.name, source.kind, config, weights, converted, time.perf_counter() - start)
    return model, tokenizer, info
