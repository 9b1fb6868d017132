"""Fixtures for the fine-tuning tests (helpers live in train_helpers.py: a `conftest` import is ambiguous)."""

from __future__ import annotations

import pathlib

import pytest
from train_helpers import speech_manifest


@pytest.fixture(scope="session")
def train_manifest(tmp_path_factory) -> pathlib.Path:
    """A dataset manifest of 4 short recordings with per-sentence segments."""
    return speech_manifest(tmp_path_factory.mktemp("speech"), 4)
