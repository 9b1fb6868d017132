"""Whisper cross-attention memory: what the decoder's queries read from the encoder frames of a window batch.

Three forms, one duck-typed interface (`batch`, `attend(layer, q)`, `index_select(index)`, `reorder(index)`):

- `CrossMemory`: contiguous K/V [L, B, F, H, D], exact SDPA (mode "dense").
- `PagedCrossMemory`: K/V in a `PagedKVCache` (pages of S frames, the last one partial when F % S != 0) whose
  page statistics are built once per window when the memory is filled; every query reads its top-k pages
  through `paged_decode_attention` (UNIQUE or a baseline score, by `SparsityConfig`). Rows index a page
  table, so beams reorder the table, never the pools; the pools are allocated once and refilled in place
  (static addresses for CUDA graphs).
- `GatedCrossMemory`: contiguous K/V read through soft-mask attention (training: UNIQUE's soft gate or the
  hard top-k mask, `SoftGateConfig`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from unique_asr.attention import AttentionBackend, dense_attention, get_backend, paged_decode_attention
from unique_asr.cache import PagedKVCache
from unique_asr.config import SparsityConfig
from unique_asr.kernels.select_pages.registry import require

GATE_MODES = ("none", "soft", "hard")


@dataclass(frozen=True)
class CrossMemory:
    """Cross-attention keys/values of one batch of windows, computed once: k, v [L, B, F, H, D]."""

    k: torch.Tensor
    v: torch.Tensor

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    def index_select(self, index: torch.Tensor) -> "CrossMemory":
        """Memory whose row i is row index[i] (int64 [B']), e.g. to expand windows into beams."""
        return CrossMemory(self.k.index_select(1, index), self.v.index_select(1, index))

    def reorder(self, index: torch.Tensor) -> None:
        """In place: row i becomes row index[i] (int64 [B]); storage and shapes stay."""
        self.k.copy_(self.k.index_select(1, index))
        self.v.copy_(self.v.index_select(1, index))

    def attend(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        """q [B, T, H, D] -> [B, T, H, D]: exact softmax over all F frames of the row's window."""
        return dense_attention(q, self.k[layer], self.v[layer])


@dataclass(frozen=True)
class SoftGateConfig:
    """Cross-attention of the teacher-forced training forward (design.md §1, docs/softmask.md).

    mode: "none" dense attention; "soft" UNIQUE's soft gate log sigmoid((s_p - theta) / tau) on every key of
        page p (||q|| detached, theta stop-gradient); "hard" the hard top-k page mask (final phase).
    tau: gate temperature in raw q·k score units; page_size (a power of two) and budget (frames) give
        top_k = budget // page_size pages; lam: spread weight of the score.
    kernel: "triton" (fused forward/backward; CPU needs TRITON_INTERPRET=1), "naive" (materialised PyTorch
        spec), "auto" = triton on CUDA, naive elsewhere.
    score: the page score (kernels/select_pages/registry.py); the soft-mask kernels implement "unique" only,
        any other registered score is refused here with the list of those they implement.
    """

    mode: str = "none"
    tau: float = 4.0
    page_size: int = SparsityConfig.page_size  # the pages the gate trains for are the ones decoding reads:
    budget: int = SparsityConfig.budget        # one set of defaults (config.py)
    lam: float = SparsityConfig.lam
    kernel: str = "auto"
    score: str = "unique"

    def __post_init__(self) -> None:
        require(self.score, "softmask")
        if self.mode not in GATE_MODES:
            raise ValueError(f"gate mode {self.mode!r} is not one of {', '.join(GATE_MODES)}")
        if self.kernel not in ("auto", "triton", "naive"):
            raise ValueError(f"gate kernel {self.kernel!r} is not one of auto, triton, naive")
        if self.page_size < 1 or self.page_size & (self.page_size - 1):
            raise ValueError(f"page_size must be a power of two, got {self.page_size}")
        if self.budget < self.page_size:
            raise ValueError(f"budget ({self.budget}) must be at least one page ({self.page_size} frames)")
        if not self.tau > 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")

    @property
    def top_k(self) -> int:
        return self.budget // self.page_size


def _softmask(kernel: str, device: torch.device) -> Callable:
    """The soft-mask attention implementation for `kernel` on `device` (imported on use: Triton)."""
    from unique_asr.kernels.softmask_attention import softmask_attention, softmask_attention_naive

    if kernel == "auto":
        kernel = "triton" if device.type == "cuda" else "naive"
    return softmask_attention if kernel == "triton" else softmask_attention_naive


@dataclass(frozen=True)
class GatedCrossMemory(CrossMemory):
    """Contiguous k, v [L, B, F, H, D] read through soft-mask cross-attention (differentiable)."""

    gate: SoftGateConfig = SoftGateConfig()

    def index_select(self, index: torch.Tensor) -> "GatedCrossMemory":
        return GatedCrossMemory(self.k.index_select(1, index), self.v.index_select(1, index), self.gate)

    def attend(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        """q [B, T, H, D] -> [B, T, H, D]; dense when mode is "none" (then exactly `CrossMemory.attend`)."""
        g = self.gate
        if g.mode == "none":
            return super().attend(layer, q)
        attention = _softmask(g.kernel, q.device)
        return attention(q, self.k[layer], self.v[layer], page_size=g.page_size, top_k=g.top_k, tau=g.tau,
                         lam=g.lam, hard=g.mode == "hard", causal=False)


class PagedCrossMemory:
    """Encoder memory of up to `max_batch` windows in preallocated pages, read sparsely per query.

    cache: PagedKVCache with L layers, pages of S = sparsity.page_size frames, ceil(F / S) pages per window,
        each layer's page statistics (the modes `sparsity.mode` needs) built once by `fill`.
    page_table: int32 [B, ceil(F / S)] physical pages of each row (rows may share a window's pages);
    lengths: int32 [B] frames per row (F). backend: the attention backend, resolved once.
    """

    def __init__(self, cache: PagedKVCache, page_table: torch.Tensor, lengths: torch.Tensor,
                 sparsity: SparsityConfig, backend: AttentionBackend):
        self.cache, self.page_table, self.lengths = cache, page_table, lengths
        self.sparsity, self.backend = sparsity, backend

    @classmethod
    def allocate(cls, *, num_layers: int, max_batch: int, frames: int, heads: int, head_dim: int,
                 sparsity: SparsityConfig, device: torch.device | str, dtype: torch.dtype
                 ) -> "PagedCrossMemory":
        """Empty pools for `max_batch` windows of `frames` frames (fill them with `fill`)."""
        pages = -(-frames // sparsity.page_size)
        cache = PagedKVCache(num_layers=num_layers, num_pages=max_batch * pages, page_size=sparsity.page_size,
                             num_kv_heads=heads, head_dim=head_dim, max_batch=max_batch,
                             max_pages_per_seq=pages, dtype=dtype, device=device,
                             modes=("dense" if sparsity.mode == "window" else sparsity.mode,),  # window: no stats
                             stats_dtype=sparsity.stats_dtype, extra_statistics=sparsity.extra_statistics)
        backend = get_backend(sparsity.backend, cache.device)
        return cls(cache, cache.page_table.clone(), cache.lengths.clone(), sparsity, backend)

    @property
    def batch(self) -> int:
        return self.page_table.shape[0]

    @torch.no_grad()
    def fill(self, kv: Callable[[int], tuple[torch.Tensor, torch.Tensor]], batch: int) -> None:
        """Write `batch` windows (the first rows; others end empty), in place.

        kv(layer) -> k, v [batch, F, H, D] of that layer (computed one layer at a time, so the whole
        memory never exists twice). Page statistics are computed here, once per window. Inference only:
        no gradient reaches the pools (training reads a `GatedCrossMemory`).
        """
        cache, rows, dtype = self.cache, self.cache.page_table.shape[0], self.cache.k_pool.dtype
        cache.release(range(rows))
        k, v = kv(0)
        plan = cache.reserve([k.shape[1]] * batch + [0] * (rows - batch))
        for layer in range(cache.k_pool.shape[0]):
            if layer:
                k, v = kv(layer)
            cache.append(layer, plan, k.flatten(0, 1).to(dtype), v.flatten(0, 1).to(dtype))
        if self.page_table.shape[0] == cache.page_table.shape[0]:
            self.page_table.copy_(cache.page_table)
            self.lengths.copy_(cache.lengths)
        else:
            self.page_table, self.lengths = cache.page_table[:batch].clone(), cache.lengths[:batch].clone()

    def index_select(self, index: torch.Tensor) -> "PagedCrossMemory":
        """Memory whose row i reads row index[i]'s pages (int64 [B']); the pools are shared, not copied."""
        return PagedCrossMemory(self.cache, self.page_table.index_select(0, index),
                                self.lengths.index_select(0, index), self.sparsity, self.backend)

    def reorder(self, index: torch.Tensor) -> None:
        """In place: row i becomes row index[i] (int64 [B]), by reordering the page table only."""
        self.page_table.copy_(self.page_table.index_select(0, index))
        self.lengths.copy_(self.lengths.index_select(0, index))

    def attend(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        """q [B, T, H, D] -> [B, T, H, D]: each of the B·T queries reads its own top-k pages.

        T > 1 (prompt prefill) flattens the queries into B·T rows that share their window's page table;
        T == 1 (the decode step) has static shapes and no host sync.
        """
        B, T, H, D = q.shape
        table, lengths = self.page_table, self.lengths
        if T > 1:
            table, lengths = table.repeat_interleave(T, 0), lengths.repeat_interleave(T, 0)
        rows = q.reshape(B * T, H, D).to(self.cache.k_pool.dtype)
        out = paged_decode_attention(rows, self.cache.layer(layer), table, lengths, self.sparsity,
                                     layer_index=layer, backend=self.backend)
        return out.reshape(B, T, H, D).to(q.dtype)
