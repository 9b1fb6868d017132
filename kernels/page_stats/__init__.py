"""Fused K/V append + incremental page statistics (mean, std; per-dim sigma; min/max).

`append_kv` is the Triton kernel (CUDA, or CPU under TRITON_INTERPRET=1); `append_kv_naive` is its
PyTorch twin and the spec.
"""

from .naive import WORK_COLUMNS, PageStats, StatAccumulators, append_kv_naive, validate_append
from .triton import append_kv

__all__ = ["WORK_COLUMNS", "PageStats", "StatAccumulators", "append_kv", "append_kv_naive", "validate_append"]
