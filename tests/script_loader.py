"""scripts/*.py as modules for the tests (scripts/ is not a package)."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

SCRIPTS = pathlib.Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str):
    """scripts/<name>.py executed fresh as module `script_<name>`; scripts/ joins sys.path once, for the
    scripts' imports of each other (bench_e2e -> bench_e2e_common -> bench_kernels)."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(f"script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module
