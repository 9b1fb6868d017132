"""Fused pieces of a decoder step outside attention (issue 11 item 7): residual add + RMSNorm in one pass,
rotary applied in place to the q and k heads of the fused QKV output (angles computed in the kernel), SiLU-gated
product of the fused gate+up output, and skinny GEMMs for the step's few rows whose split-K partials the norm or
rotary sums (`skinny`). Triton kernels (CUDA, or CPU under TRITON_INTERPRET=1) with PyTorch twins (`naive`), the
spec; `FUSED_BACKENDS` picks by device."""

from collections.abc import Callable
from typing import NamedTuple

from .naive import (
    add_rms_norm_naive,
    rotary_naive,
    rotary_sum_naive,
    silu_mul_naive,
    skinny_linear_naive,
)
from .skinny import BLOCK_M, SkinnyConfig, skinny_linear
from .triton import add_rms_norm, rotary, rotary_sum, silu_mul


class FusedOps(NamedTuple):
    add_norm: Callable
    rotary: Callable
    silu_mul: Callable
    rotary_sum: Callable
    linear: Callable


FUSED_BACKENDS = {"triton": FusedOps(add_rms_norm, rotary, silu_mul, rotary_sum, skinny_linear),
                  "torch": FusedOps(add_rms_norm_naive, rotary_naive, silu_mul_naive, rotary_sum_naive,
                                    skinny_linear_naive)}

__all__ = ["BLOCK_M", "FUSED_BACKENDS", "FusedOps", "SkinnyConfig", "add_rms_norm", "add_rms_norm_naive", "rotary",
           "rotary_naive", "rotary_sum", "rotary_sum_naive", "silu_mul", "silu_mul_naive", "skinny_linear",
           "skinny_linear_naive"]
