"""Programmatic dependent launch (PDL, sm_90+) for the decode step's Triton kernels.

A decode step is ~13 short kernels a layer (5-30 us each at batch 16), so each kernel's launch, block scheduling
and tail are a visible share of the step. With PDL a kernel is launched with
CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION (Triton's `launch_pdl`): its blocks may be scheduled once
every block of the kernel before it has called `griddepcontrol.launch_dependents` (or exited), instead of after
that kernel has finished; its `griddepcontrol.wait` then blocks until the kernel before has completed and its
writes are visible. CUDA graphs keep these edges (programmatic dependencies).

The contract every kernel here follows (`pdl_enter` as its first statement): wait first, then allow the next
kernel to launch. Nothing is read or written before the wait, so ordering is as without PDL: a kernel's wait
returns only after the kernel before it completed, and that kernel itself waited for the one before (so a chain
of PDL kernels stays ordered transitively, and kernels that are not PDL-launched, cuBLAS or torch's, order as
always). What is gained is the next kernel's launch and block scheduling overlapping the current kernel's run.

Runs where it can (CUDA device of compute capability >= 9, a Triton with the `launch_pdl` option, not the
interpreter) unless `UNIQUE_PDL=0` (`DEFAULT`). Setting it forces nothing: it never runs where unsupported.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

ENV = "UNIQUE_PDL"
# on: timed on an H100 (Voxtral-Mini-3B step, 16 x 40 min, four processes off/on/off/on: 5.291 / 5.251 / 5.265 /
# 5.229 ms, -0.7 %) and the GPU tests pass with it on (fused step, graph step, LLM parity, dense attention, PDL chain)
DEFAULT = "1"


@functools.cache
def _triton_has_pdl() -> bool:
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
    except ImportError:  # pragma: no cover - Triton without its NVIDIA backend
        return False
    return "launch_pdl" in CUDAOptions.__dataclass_fields__


@functools.cache
def _capable(index: int) -> bool:
    return torch.cuda.get_device_capability(index)[0] >= 9


def pdl_enabled(t: torch.Tensor) -> bool:
    """Whether kernels launched on `t`'s device use programmatic dependent launch (see the module docstring)."""
    if not t.is_cuda or os.environ.get(ENV, DEFAULT) == "0":
        return False
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return False
    return _triton_has_pdl() and _capable(t.device.index if t.device.index is not None else
                                          torch.cuda.current_device())


def pdl_launch(t: torch.Tensor) -> dict:
    """Keyword arguments of a kernel launch on `t`'s device: the kernel's PDL constexpr and Triton's launch_pdl."""
    on = pdl_enabled(t)
    return {"PDL": on, "launch_pdl": on} if on else {"PDL": False}


@triton.jit
def pdl_enter(PDL: tl.constexpr):
    """A PDL-launched kernel's first statement: wait for the kernel before it (its writes visible), then let the
    next kernel's blocks be scheduled. No-op when PDL is False (and never under the interpreter, which has no
    inline assembly)."""
    if PDL:
        tl.inline_asm_elementwise("griddepcontrol.wait; // $0", "=r", [], dtype=tl.int32, is_pure=False, pack=1)
        tl.inline_asm_elementwise("griddepcontrol.launch_dependents; // $0", "=r", [], dtype=tl.int32,
                                  is_pure=False, pack=1)


@triton.jit
def prefetch_l2(ptrs):
    """Ask L2 to fetch the lines at `ptrs` (one pointer per 128-byte line wanted), without waiting for them: what a
    PDL kernel may do with data nothing in the step writes (weights) before its `griddepcontrol.wait`."""
    tl.inline_asm_elementwise("prefetch.global.L2 [$1]; // $0", "=r,l", [ptrs], dtype=tl.int32, is_pure=False,
                              pack=1)
