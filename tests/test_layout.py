"""The dependency direction of design.md §3, enforced on the source tree (import statements only)."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]

# layer -> unique_asr subpackages/modules it must never import
FORBIDDEN = {
    "kernels": ["unique_asr"],
    "unique_asr/cache": ["unique_asr.attention", "unique_asr.models", "unique_asr.decoding", "unique_asr.transcribe", "unique_asr.cli"],
    "unique_asr/attention": ["unique_asr.models", "unique_asr.decoding", "unique_asr.transcribe", "unique_asr.cli"],
    "unique_asr/models": ["unique_asr.decoding", "unique_asr.transcribe", "unique_asr.cli", "unique_asr.stream_decoding",
                          "unique_asr.stream_transcribe", "unique_asr.stream_runner", "unique_asr.runner"],
    # a corpus job runs on the base install; unique_asr.eval needs the [eval] extra (rapidfuzz, jiwer)
    "unique_asr/corpus": ["unique_asr.eval"],
    "unique_asr/eval": ["torch", "unique_asr.models", "unique_asr.attention", "unique_asr.cache", "unique_asr.kernels", "unique_asr.transcribe", "triton"],
}
HYDRA_ALLOWED = ("scripts", "tests", "conf")


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _allowed_kernel_import(name: str) -> bool:
    return name.startswith("unique_asr.kernels")


def test_dependency_direction():
    problems = []
    for layer, banned in FORBIDDEN.items():
        for path in (ROOT / layer).rglob("*.py"):
            for name in _imports(path):
                for prefix in banned:
                    if (name == prefix or name.startswith(prefix + ".")) and not (
                        layer == "kernels" and _allowed_kernel_import(name)
                    ):
                        problems.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not problems, "\n".join(problems)


def test_hydra_only_in_scripts_and_conf():
    offenders = [
        str(p.relative_to(ROOT))
        for p in ROOT.rglob("*.py")
        if ".venv" not in p.parts and p.parts[len(ROOT.parts)] not in HYDRA_ALLOWED
        and any(n.split(".")[0] in ("hydra", "omegaconf") for n in _imports(p))
    ]
    assert not offenders, offenders


def test_kernels_never_imported_as_top_level():
    offenders = []
    for p in ROOT.rglob("*.py"):
        if ".venv" in p.parts:
            continue
        if any(n == "kernels" or n.startswith("kernels.") for n in _imports(p)):
            offenders.append(str(p.relative_to(ROOT)))
    assert not offenders, offenders
