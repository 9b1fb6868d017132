"""Shared helpers for the evaluation tests: import scripts/*.py by path (scripts/ is not a package)."""

from __future__ import annotations

import pytest
from script_loader import load_script


@pytest.fixture(scope="session")
def scripts():
    return load_script
