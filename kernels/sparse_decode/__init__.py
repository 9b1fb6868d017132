"""Paged decode attention (one query per sequence and head) over selected pages or the whole page table.

`sparse_decode_attention` / `dense_paged_decode_attention` are the Triton kernels (CUDA, or CPU under
TRITON_INTERPRET=1); the `*_naive` functions are their PyTorch twins and the spec. The `*_estimate` pair
also gives every held unselected page one page-mean softmax term (SparsityConfig.unselected="estimate").
"""

from .estimate import sparse_decode_attention_estimate
from .naive import (
    dense_paged_decode_attention_naive,
    sparse_decode_attention_estimate_naive,
    sparse_decode_attention_naive,
    validate_decode_inputs,
)
from .triton import DecodeConfig, dense_paged_decode_attention, sparse_decode_attention

__all__ = [
    "DecodeConfig",
    "dense_paged_decode_attention",
    "dense_paged_decode_attention_naive",
    "sparse_decode_attention",
    "sparse_decode_attention_estimate",
    "sparse_decode_attention_estimate_naive",
    "sparse_decode_attention_naive",
    "validate_decode_inputs",
]
