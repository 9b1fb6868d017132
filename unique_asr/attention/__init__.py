"""The one attention entry point both model families call; backends are resolved by name.

`dense_attention` (contiguous [B, T, H, D], prefill and short self-attention) and
`paged_decode_attention` (one decode query per sequence against a paged cache layer, sparse or dense by
SparsityConfig); `get_backend` resolves "auto" / "dense" / "sparse-torch" / "sparse-triton" once.
"""

from unique_asr.attention.dense import dense_attention
from unique_asr.attention.paged import paged_decode_attention, select_decode_pages
from unique_asr.attention.registry import BACKENDS, AttentionBackend, get_backend

__all__ = [
    "BACKENDS",
    "AttentionBackend",
    "dense_attention",
    "get_backend",
    "paged_decode_attention",
    "select_decode_pages",
]
