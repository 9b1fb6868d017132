"""Fused pieces of a decoder step outside attention (issue 11 item 7): residual add + RMSNorm in one pass,
rotary applied in place to the q and k heads of the fused QKV output (angles computed in the kernel), SiLU-gated
product of the fused gate+up output. Triton kernels (CUDA, or CPU under TRITON_INTERPRET=1) with PyTorch twins
(`naive`), the spec; `FUSED_BACKENDS` picks by device."""

from .naive import add_rms_norm_naive, rotary_naive, silu_mul_naive
from .triton import add_rms_norm, rotary, silu_mul

FUSED_BACKENDS = {"triton": (add_rms_norm, rotary, silu_mul),
                  "torch": (add_rms_norm_naive, rotary_naive, silu_mul_naive)}

__all__ = ["FUSED_BACKENDS", "add_rms_norm", "add_rms_norm_naive", "rotary", "rotary_naive", "silu_mul",
           "silu_mul_naive"]
