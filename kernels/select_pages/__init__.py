"""Page scoring (the scores of `registry.SCORES`) + top-k page selection.

`select_pages` is the Triton kernel (`score_pages` its scoring pass alone) (CUDA, or CPU under TRITON_INTERPRET=1); `select_pages_naive` is its
PyTorch twin and the spec, with `page_scores_naive`, `oracle_scores_naive` and `topk_pages_naive`;
`refine_pages` (Triton, refine.py) keeps the best k of a larger selection by pool-dtype means, twin
`refine_pages_naive`; `window_pages` (Triton, window.py) the `window` baseline's sink + recent pages, twin
`window_pages_naive`.
`registry` is the one table of scores (imports neither torch nor triton); the rest is imported on first
use, so `unique_asr.config` can validate modes against the registry without loading the kernels.
"""

from __future__ import annotations

import importlib

from .registry import (
    REFINABLE,
    SCORES,
    STATISTICS,
    STATS_DTYPES,
    Score,
    get_score,
    require,
    scores_for,
    statistics_for,
)

_LAZY = {
    "MODES": "naive", "oracle_scores_naive": "naive", "page_scores_naive": "naive",
    "select_pages_naive": "naive", "topk_pages_naive": "naive", "validate_select": "naive",
    "refine_pages_naive": "naive", "validate_refine": "naive", "window_pages_naive": "naive",
    "SINK_PAGES": "naive", "window_pages": "window",
    "SelectConfig": "triton", "select_pages": "triton", "score_pages": "triton", "refine_pages": "refine",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["REFINABLE", "SCORES", "STATISTICS", "STATS_DTYPES", "Score", "get_score", "require",  # noqa: PLE0604
           "scores_for", "statistics_for", *_LAZY]
