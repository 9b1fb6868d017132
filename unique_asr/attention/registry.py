"""Attention backends by name: resolved once per (name, device type), logged, forceable in tests.

dense          PyTorch dense paged attention over every held page (the reference; ignores the sparsity mode)
sparse-torch   PyTorch twins: page selection (select_pages_naive) + sparse paged attention
sparse-triton  Triton kernels: fused score + top-k (select_pages) + sparse paged attention; dense paged
               attention from the same kernel where the config asks for dense
Both sparse backends have an `estimate` form of the sparse attention (SparsityConfig.unselected="estimate") and
a `refine` step (SparsityConfig.refine: the best k of a selection from coded means by the KV-dtype means) and
the `window` baseline's selection (sink + most recent pages, no scoring).
"auto" is sparse-triton on CUDA with bf16/fp16 activations and sparse-torch otherwise (SparsityConfig.backend):
the Triton attention kernel takes half precision only.
"""

from __future__ import annotations

import functools
import logging
from typing import Callable, NamedTuple

import torch

from unique_asr.kernels.select_pages.naive import refine_pages_naive, select_pages_naive, window_pages_naive
from unique_asr.kernels.sparse_decode.naive import (
    dense_paged_decode_attention_naive,
    sparse_decode_attention_estimate_naive,
    sparse_decode_attention_naive,
)

logger = logging.getLogger(__name__)

BACKENDS = ("dense", "sparse-torch", "sparse-triton")


class AttentionBackend(NamedTuple):
    """name; select(q, page_table, lengths, mean, std, *, k, page_size, mode, ...) -> int32 [B, Hkv, k]
    (None for "dense"); sparse(q, k_pool, v_pool, page_ids, page_table, lengths, scale) -> [B, H, D];
    dense(q, k_pool, v_pool, page_table, lengths, scale) -> [B, H, D]; estimate(q, k_pool, v_pool, page_ids,
    page_table, lengths, key_mean, value_mean, key_scale=, scale=) -> [B, H, D] (sparse plus page-mean terms
    for the unselected pages; None for "dense"); refine(q, candidates, page_table, lengths, mean, std, *, k,
    page_size, mode, ...) -> int32 [B, Hkv, k] (the best k of a selection by KV-dtype means; None for "dense");
    window(page_table, lengths, *, k, page_size, num_kv_heads) -> int32 [B, Hkv, k] (the `window` mode's sink +
    recent pages; None for "dense")."""

    name: str
    select: Callable | None
    sparse: Callable | None
    dense: Callable
    estimate: Callable | None = None
    refine: Callable | None = None
    window: Callable | None = None


def _triton_kernels() -> tuple:
    """Imported on first use: triton is a Linux-only dependency and the torch backends do without it."""
    from unique_asr.kernels.select_pages import refine_pages, select_pages, window_pages
    from unique_asr.kernels.sparse_decode import (
        dense_paged_decode_attention,
        sparse_decode_attention,
        sparse_decode_attention_estimate,
    )

    return (select_pages, sparse_decode_attention, dense_paged_decode_attention, sparse_decode_attention_estimate,
            refine_pages, window_pages)


_TABLE = {
    "dense": lambda: (None, None, dense_paged_decode_attention_naive),
    "sparse-torch": lambda: (select_pages_naive, sparse_decode_attention_naive, dense_paged_decode_attention_naive,
                             sparse_decode_attention_estimate_naive, refine_pages_naive, window_pages_naive),
    "sparse-triton": _triton_kernels,
}


@functools.lru_cache(maxsize=None)
def _resolve(name: str, device_type: str, half: bool) -> AttentionBackend:
    if name == "auto":
        name = "sparse-triton" if device_type == "cuda" and half else "sparse-torch"
    if name not in _TABLE:
        raise ValueError(f"attention backend {name!r} is not one of auto, {', '.join(BACKENDS)}")
    backend = AttentionBackend(name, *_TABLE[name]())
    logger.info("attention backend %s on %s", name, device_type)
    return backend


def get_backend(name: str = "auto", device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.bfloat16) -> AttentionBackend:
    """The backend `name` ("auto" or one of BACKENDS) for activations of `dtype` on `device`; logged on
    first use."""
    return _resolve(name, torch.device(device).type, dtype in (torch.bfloat16, torch.float16))
