"""Decode state of a decoder-only family: N rows of one paged KV cache, one sequence (recording) per row, with
rotary positions per row, the prompt's sink pages and a page cap per row.

Past the cap, the sink pages stay and the oldest whole pages after them are evicted; rotary positions keep
counting, so kept keys keep the positions they were stored with. The first eviction is logged (a warning: the
CLI prints it) once per state, i.e. once per run.

A step is two halves (the family interface's two-phase step, unique_asr.models.family): `plan_step` does all
the host work (eviction, page reservation, the rows' rotary positions written into a device buffer) and
`run_planned` the device work, with static shapes and no host sync when every row steps; the device half only
writes slots the plan reserved, from inputs it does not change, so running it twice equals running it once.
`CapturedDecodeStep` therefore replays a CUDA graph of `run_planned` after each `plan_step` (one graph per
key: the plan's accumulator parity, the page-table width the step reads, and for a step over some rows only
their number: their indices, positions, work list and idle rows are written into buffers at fixed addresses).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from unique_asr.cache import AppendPlan
from unique_asr.cache.paged_kv import upload
from unique_asr.errors import UniqueASRError
from unique_asr.models.llm import allocate_cache

logger = logging.getLogger(__name__)
MIN_WIDTH = 64  # page-table columns a decode step reads at least (see PagedRows.plan_step)
MEMORY_SHARE = 0.8  # of the free device memory (CPU: available RAM) that the KV pool may take


class DoesNotFitError(UniqueASRError, MemoryError):
    """A recording's window cannot fit in the pages planned for one row."""


def _say_eviction(limit: int, sink: int) -> None:
    logger.warning("a recording outgrew the context held per row (%d tokens): keeping the prompt's %d sink "
                   "page(s) and evicting the oldest whole pages (rotary positions keep counting)", limit, sink)


def free_bytes(device: torch.device) -> int:
    """Free device memory (CUDA: cudaMemGetInfo) or available RAM (elsewhere)."""
    if device.type == "cuda":  # + what torch's allocator holds unused (an earlier run's pool, freed to its cache)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(torch.cuda.mem_get_info(device)[0]) + cached
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError):
        return 8 << 30


def page_bytes(model, dtype: torch.dtype) -> int:
    """Bytes one more page of a row adds, over all layers: K and V, every page statistic the sparsity setting
    keeps (coded means and their scales, rmean, vmean, ...) and its page-table entry: the difference of a one-
    and a two-page cache built on the meta device (nothing allocated)."""
    c, sp = model.net.config.llm, model.sparsity
    one, two = (allocate_cache(c, sp, batch=1, num_pages=n, dtype=dtype, device="meta").nbytes for n in (1, 2))
    return two - one


def plan_pages(model, rows: int, dtype: torch.dtype, device: torch.device, needed_tokens: int,
               max_tokens: int | None = None, spare_pages: int = 0) -> int:
    """Pages per row: the trained context (or max_tokens) if memory allows it for `rows` rows, else what fits.

    needed_tokens: what one window needs beside the sink (its chunk and transcript). spare_pages: pages each row
    needs in the pool beside its own (beam search: the beams' and finished hypotheses' private pages).
    Raises DoesNotFitError with the numbers when not even that fits.
    """
    S = model.sparsity.page_size
    sink = -(-len(model.prompt(None).prompt_ids) // S)
    need = sink + -(-needed_tokens // S) + 2
    limit = max_tokens or model.net.config.llm.max_positions
    by_memory = int(free_bytes(device) * MEMORY_SHARE) // (rows * page_bytes(model, dtype)) - spare_pages
    pages = by_memory if limit is None else min(by_memory, -(-limit // S) + 1)
    if limit is not None and -(-limit // S) + 1 < need:
        raise DoesNotFitError(f"one window needs {need} pages of {S} tokens (prompt, audio tokens, transcript) "
                              f"but the model's context holds {limit} tokens")
    if pages < need:
        raise DoesNotFitError(
            f"one window needs {need} pages of {S} tokens per recording but only {by_memory} fit per row for "
            f"{rows} recording(s) in {free_bytes(device) / 2**30:.1f} GiB free; lower --batch_size")
    return pages


@dataclass
class PagedRows:
    """N rows of one paged KV cache (the decode state of a decoder-only family): rotary positions per row,
    sink pages, the page cap with eviction."""

    model: object
    cache: object
    pages_per_row: int
    positions: list[int] = field(default_factory=list)
    sink_pages: list[int] = field(default_factory=list)
    evicted: bool = False  # the policy is logged once per decoder (one CLI run of many files: once)
    position_buffer: torch.Tensor | None = None  # int64 [rows] on the device: the planned step's positions
    row_buffer: torch.Tensor | None = None  # int64 [rows] on the device: the rows of a step over some of them
    planned: tuple[AppendPlan, torch.Tensor | None] | None = None  # (plan, row index or None: every row)

    @classmethod
    def allocate(cls, model, rows: int, pages_per_row: int, dtype: torch.dtype | None = None,
                 num_pages: int | None = None) -> PagedRows:
        """rows rows of at most pages_per_row pages each, in a pool of num_pages pages (default: rows x
        pages_per_row; rows that share pages need fewer)."""
        weight = next(model.parameters())
        device = weight.device
        dtype = dtype or (weight.dtype if device.type == "cuda" else torch.float32)
        cache = allocate_cache(model.net.config.llm, model.sparsity, batch=rows,
                               num_pages=num_pages or rows * pages_per_row, max_pages_per_seq=pages_per_row,
                               dtype=dtype, device=device)
        return cls(model, cache, pages_per_row, [0] * rows, [0] * rows,
                   position_buffer=torch.zeros(rows, dtype=torch.int64, device=device),
                   row_buffer=torch.zeros(rows, dtype=torch.int64, device=device))

    @property
    def rows(self) -> int:
        return len(self.positions)

    def reset(self, row: int, prompt_ids: Sequence[int]) -> None:
        """Empty a row and start it with the prompt's head (its pages become the row's sink)."""
        self.cache.release([row])
        self.positions[row] = 0
        self.sink_pages[row] = -(-len(prompt_ids) // self.cache.page_size)
        if prompt_ids:
            self.prefill(row, self.model.net.llm.embed_tokens(self._ids(prompt_ids)))

    def release(self, rows: Sequence[int]) -> None:
        """Empty rows (their pages go back to the pool unless another row or a snapshot holds them)."""
        self.cache.release(list(rows))
        for row in rows:
            self.positions[row] = self.sink_pages[row] = 0

    def share(self, dst: Sequence[int], src: Sequence[int]) -> None:
        """Rows dst[i] continue rows src[i] (all read first; pairs with dst == src are skipped): pages by
        reference (PagedKVCache.share), positions and sink pages. Beam search's reorder."""
        pairs = [(int(d), int(s)) for d, s in zip(dst, src) if int(d) != int(s)]
        if not pairs:
            return
        dst, src = zip(*pairs)
        self.cache.share(dst, src)
        positions, sinks = [self.positions[s] for s in src], [self.sink_pages[s] for s in src]
        for d, position, sink in zip(dst, positions, sinks):
            self.positions[d], self.sink_pages[d] = position, sink

    def snapshot(self, row: int) -> tuple:
        """Row `row`'s sequence held apart (a finished beam hypothesis): its pages stay until `drop_snapshot`."""
        return self.cache.snapshot(row), self.positions[row], self.sink_pages[row]

    def load_snapshot(self, row: int, snap: tuple) -> None:
        cached, self.positions[row], self.sink_pages[row] = snap
        self.cache.load_snapshot(row, cached)

    def drop_snapshot(self, snap: tuple) -> None:
        self.cache.drop_snapshot(snap[0])

    def _ids(self, ids: Sequence[int]) -> torch.Tensor:
        return upload(np.asarray([list(ids)], dtype=np.int64), self.cache.device)

    def _make_room(self, row: int, n: int) -> None:
        """Evict the oldest non-sink pages of `row` so that n more tokens fit under the page cap."""
        S = self.cache.page_size
        length = int(self.cache.host_lengths()[row])
        excess = -(-(length + n) // S) - self.pages_per_row
        if excess > 0:
            held = -(-length // S)
            if self.sink_pages[row] + excess >= held:
                raise DoesNotFitError(f"{n} new tokens do not fit in {self.pages_per_row} pages of {S} beside "
                                      f"{self.sink_pages[row]} sink pages")
            if not self.evicted:
                _say_eviction(self.pages_per_row * S, self.sink_pages[row])
            self.evicted = True
            self.cache.evict(row, self.sink_pages[row], excess)

    def prefill(self, row: int, x: torch.Tensor) -> torch.Tensor:
        """Append embeddings x [1, T, d] to `row`; float32 logits [V] after its last token."""
        return self.prefill_rows([row], x)[0]

    def prefill_rows(self, rows: Sequence[int], x: torch.Tensor) -> torch.Tensor:
        """Append embeddings x [A, T, d] to rows `rows` (ascending, one each); float32 logits [A, V] after each
        row's last token. One batched prefill (LLM.prefill_rows)."""
        for row in rows:
            self._make_room(row, x.shape[1])
        llm = self.model.net.llm
        h = llm.prefill_rows(x.to(llm.embed_tokens.weight.dtype), self.cache, list(rows),
                             [self.positions[r] for r in rows])
        for row in rows:
            self.positions[row] += x.shape[1]
        return llm.logits(h[:, -1])

    def plan_step(self, rows: Sequence[int] | None = None) -> tuple[int, ...]:
        """Host half of one step that appends one token to each listed row (ascending; None: every row):
        eviction, page reservation, positions into `position_buffer` (and the rows into `row_buffer`). Returns
        the key of the graph its device half needs: (the plan's accumulator parity, the page-table width read:
        the held pages of the longest row rounded up to a power of two, at least MIN_WIDTH and top-k), so a step
        reads no columns far past the longest row and a growing context re-captures a few times (log2 of its
        pages), not every step; a step over some rows adds their number (continuous batching's tail)."""
        rows = range(self.rows) if rows is None else list(rows)
        for row in rows:
            self._make_room(row, 1)
        device = self.cache.device
        every = len(rows) == self.rows
        counts = [0] * self.rows
        for row in rows:
            counts[row] = 1
        plan = self.cache.reserve(counts)
        upload(np.asarray([self.positions[r] for r in rows], dtype=np.int64), device,
               out=self.position_buffer[: len(rows)])
        for row in rows:
            self.positions[row] += 1
        held = -(-int(self.cache.host_lengths().max()) // self.cache.page_size)
        width = min(self.cache.max_pages,
                    max(MIN_WIDTH, self.model.sparsity.top_k, 1 << max(0, held - 1).bit_length()))
        index = None if every else upload(np.asarray(rows, dtype=np.int64), device, out=self.row_buffer[: len(rows)])
        self.planned = (plan, index, width)
        return (plan.parity, width) if every else (plan.parity, width, len(rows))

    def run_planned(self, tokens: torch.Tensor) -> torch.Tensor:
        """Device half of the planned step: tokens int64 [A] (one per planned row) -> float32 logits [A, V].
        Idempotent for one plan (see the module docstring)."""
        if self.planned is None:
            raise RuntimeError("run_planned needs plan_step first")
        plan, index, width = self.planned
        llm = self.model.net.llm
        return llm.decode_logits(llm.embed_tokens(tokens), self.cache, self.position_buffer[: tokens.shape[0]],
                                 self.model.sparsity, plan=plan, rows=index, width=width)

    def step(self, tokens: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
        """One token per listed row (ascending): tokens int64 [A] -> float32 logits [A, V] (both halves)."""
        self.plan_step(rows)
        return self.run_planned(tokens)

    def save(self) -> None:
        """Nothing to save: the device half of a planned step changes no state it reads (module docstring)."""

    def restore(self, saved: None) -> None:
        pass
