"""CPU models keep freed memory for reuse (unique_asr/malloc.py): a large tensor allocated after another was
freed touches pages already mapped, instead of faulting every page in again. Counted with the process's minor
page faults, in fresh interpreters (the setting is process-wide)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# one "layer" of a CPU forward pass: activations of a batch of encoder windows and their elementwise results
PROBE = """
import resource, sys, torch
from unique_asr.malloc import reuse_freed_memory
applied = reuse_freed_memory() if sys.argv[1] == "on" else False
faults = []
for _ in range(16):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(6 << 20)  # 24 MiB
    y = x * 2
    z = torch.ones(24 << 20)  # 96 MiB
    w = z + 1
    del x, y, z, w
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, sum(faults[-4:]))
"""
# What the last four layers touch, in 4 KiB pages. The heap reaches its steady state after 2-5 layers, how many
# varies from run to run (a fresh-clone CI run still faulted at layers 7-8 of 8): so 16 layers, the last 4 counted.
PAGES = 4 * (240 << 20) // 4096


def _faults(setting: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, setting], capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_memory_is_reused_without_page_faults():
    applied, faults = _faults("on")
    if not applied:
        pytest.skip("this C library has no mallopt (not glibc)")
    assert faults < PAGES // 10, faults  # once the heap holds a layer's working set, later layers reuse it
    _, default = _faults("off")
    assert default > PAGES // 2, default  # glibc's default: fresh mmaps, every page faulted in again


def test_load_model_on_cpu_sets_it():
    from unique_asr import load_model, malloc

    load_model("tiny.en", device="cpu")
    assert malloc._applied or not sys.platform.startswith("linux")
