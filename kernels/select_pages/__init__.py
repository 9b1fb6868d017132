"""Page scoring (UNIQUE, mean-only, per-dimension, Quest; oracle in the twin) + top-k page selection.

`select_pages` is the Triton kernel (CUDA, or CPU under TRITON_INTERPRET=1); `select_pages_naive` is its
PyTorch twin and the spec, with `page_scores_naive`, `oracle_scores_naive` and `topk_pages_naive`.
"""

from .naive import (
    MODES,
    oracle_scores_naive,
    page_scores_naive,
    select_pages_naive,
    topk_pages_naive,
    validate_select,
)
from .triton import SelectConfig, select_pages

__all__ = [
    "MODES",
    "SelectConfig",
    "oracle_scores_naive",
    "page_scores_naive",
    "select_pages",
    "select_pages_naive",
    "topk_pages_naive",
    "validate_select",
]
