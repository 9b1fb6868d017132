"""Wall time of one call on a device: CUDA events on CUDA (the device drained first), perf_counter elsewhere.
Used where the package measures to choose (models/step_gemms.py) and by the benchmark scripts."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_ms(fn: Callable[[], None], device: torch.device) -> float:
    """Wall time of fn() in ms, the device drained before and after (CUDA events on CUDA)."""
    sync(device)
    if device.type != "cuda":
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)
