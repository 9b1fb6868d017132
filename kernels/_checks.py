"""Argument validation shared by the page-stat and page-selection kernels (clear ValueErrors, no asserts)."""

from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
FP8 = torch.float8_e4m3fn  # compact statistics dtypes: page key means as codes with a per-page scale
INT8 = torch.int8
CODE_DTYPES = {"fp8": FP8, "int8": INT8}  # stats_dtype -> the codes' dtype (select_pages/registry.CODE_MAX)
CODES = tuple(CODE_DTYPES.values())
CODE_OF = {dtype: name for name, dtype in CODE_DTYPES.items()}  # a codes tensor's dtype -> its stats_dtype name


def check_tensor(name: str, t: torch.Tensor, shape: tuple, dtypes: tuple = FLOAT_DTYPES) -> None:
    """Raise ValueError unless `t` has len(shape) dims, matching every int entry of `shape`
    (None = any size) and a dtype in `dtypes`."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != len(shape) or any(s is not None and s != n for s, n in zip(shape, t.shape)):
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {want}, got {list(t.shape)}")
    if t.dtype not in dtypes:
        raise ValueError(f"{name} must have dtype in {[str(d) for d in dtypes]}, got {t.dtype}")


def check_same_device(**tensors: torch.Tensor | None) -> None:
    """Raise ValueError when the given (non-None) tensors live on different devices."""
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        raise ValueError(f"tensors must share one device, got {devices}")


def canonical_device(device: str | torch.device) -> torch.device:
    """`device` with an explicit index for accelerators ("cuda" -> "cuda:<current>"), and plain "cpu" for
    any CPU spec ("cpu:0" -> "cpu"), so that it compares equal to the `.device` of tensors living there."""
    d = torch.device(device)
    if d.type in ("cpu", "meta"):  # meta: shapes and dtypes only (e.g. sizing a cache before allocating it)
        return torch.device(d.type)
    if d.index is None:
        return torch.device(d.type, getattr(torch, d.type).current_device())
    return d
