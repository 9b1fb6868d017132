"""CPU inference and glibc's malloc: keep freed memory for reuse instead of handing it back to the kernel.

glibc serves every allocation above its mmap threshold (128 KiB, raised dynamically up to 32 MiB) with a fresh
mmap and unmaps it on free, and trims the heap's free top above 128 KiB. Every large tensor of a CPU forward
pass (an encoder window batch's activations: 25 MB per [8 x 1500, 512] float32 tensor, 98 MB after fc1) then
costs a page fault per 4 KiB page on first touch, on every layer of every batch: elementwise ops ran at
~2.5 GB/s where the memory allows several times that. With both thresholds at 1 GiB freed blocks stay in
the heap: after a few layers the heap holds the working set and later tensors reuse it, already mapped
(tests/test_malloc.py counts the page faults). Measured (base int8, encoder on 8 windows, 2 threads, median of
3, BENCHMARKS.md "CPU allocator"): 8.30 s -> 4.95 s, peak RSS 954 -> 956 MB (the same working set, reused).

Process-wide: `load_model` calls `reuse_freed_memory` for CPU models (Linux with glibc; elsewhere nothing
happens). PyTorch's own CPU allocator has no caching mode to turn on instead; CTranslate2 (faster-whisper)
caches its CPU buffers itself.
"""

from __future__ import annotations

import ctypes
import sys

# mallopt parameters (<malloc.h>)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
THRESHOLD = 1 << 30  # 1 GiB: above any one activation of the models served here; fits mallopt's C int

_applied = False


def reuse_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to THRESHOLD, once per process. Returns whether they are set
    (False: not Linux, or a C library without mallopt, e.g. musl's stub)."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = mallopt(M_MMAP_THRESHOLD, THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, THRESHOLD) == 1
    return _applied
