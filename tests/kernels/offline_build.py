"""Offline sm_90 builds of the Triton kernels for the tests (no GPU: Triton's bundled ptxas and cuobjdump), to
check register use and spills of kernels the CPU suite only runs under the interpreter.

A test passes a script that imports its kernels and calls `resources(fn, types, consts, warps)` (defined by
`PRELUDE`, which runs first) for each launch it wants built, printing one line per launch; `run_build` runs it in
a fresh interpreter with TRITON_INTERPRET unset (compile, do not interpret) and returns the printed lines."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PRELUDE = r'''
import os, subprocess, tempfile
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

_CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump")


def _cuobjdump(fn, types, consts, warps, flag):
    sig = {n: "constexpr" if n in consts else types.get(n, "i32") for n in fn.arg_names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names) if n.endswith("_ptr")}
    build = triton.compile(ASTSource(fn, sig, consts, attrs), target=GPUTarget("cuda", 90, 32),
                           options=warps if isinstance(warps, dict) else {"num_warps": warps})
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(build.asm["cubin"])
        f.flush()
        return subprocess.run([_CUOBJDUMP, flag, f.name], capture_output=True, text=True, check=True).stdout


def resources(fn, types, consts, warps):
    """cuobjdump's resource line ("REG:.. STACK:.. ...") of `fn` built for sm_90: constexprs `consts`, argument
    types `types` by name (others i32), pointers 16-byte aligned; `warps` the warp count or the launch options
    ({"num_warps": .., "num_stages": .., "maxnreg": ..})."""
    out = _cuobjdump(fn, types, consts, warps, "-res-usage")
    return [line.strip() for line in out.splitlines() if "REG:" in line][0]


def op_sequence(fn, types, consts, warps):
    """The SASS opcodes (each before its first '.') of the same build, in program order (predicates dropped)."""
    ops = []
    for line in _cuobjdump(fn, types, consts, warps, "-sass").splitlines():
        code = line.split("*/", 1)[-1].strip() if line.strip().startswith("/*") else ""
        words = [w for w in code.rstrip(" ;").split() if not w.startswith("@")]
        if words and not words[0].startswith("/*"):
            ops.append(words[0].split(".")[0])
    return ops


def opcodes(fn, types, consts, warps):
    """{SASS opcode: count} of the same build."""
    counts = {}
    for op in op_sequence(fn, types, consts, warps):
        counts[op] = counts.get(op, 0) + 1
    return counts
'''


def run_build(script: str, *argv: str, timeout: int = 300) -> list[str]:
    """Lines printed by PRELUDE + script run as `python -c` with argv; skips the test without the tools."""
    import triton

    tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    if not all(os.path.exists(os.path.join(tools, t)) for t in ("ptxas", "cuobjdump")):
        pytest.skip("Triton's NVIDIA tools are not installed")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compile, do not interpret
    out = subprocess.run([sys.executable, "-c", PRELUDE + script, *argv], env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.splitlines()
