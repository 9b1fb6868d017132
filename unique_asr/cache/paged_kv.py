"""Preallocated paged K/V pools with a page table, lengths, a free list and incremental page statistics.

Layout and conventions: see the package docstring (unique_asr/cache/__init__.py). Page allocation runs on
the host (a free-list stack mirrored by host copies of the page table and lengths); the K/V write and the
statistics update run in one kernel per layer (`unique_asr.kernels.page_stats`).

Rows may share pages (beam search: every beam of a window reads the recording's pages once). Each physical page
carries a reference count (rows and snapshots holding it); `share` makes rows copies of other rows by reference,
a page returns to the free list when its last holder drops it, and the partial last page is copied on write:
`reserve` gives a row that is about to write into a page someone else also holds a private copy first (its K/V
and statistics, every layer), so shared pages never change under their other holders. Full pages are never
written again, so they stay shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch

from unique_asr.errors import UniqueASRError
from unique_asr.kernels._checks import CODE_DTYPES, canonical_device
from unique_asr.kernels.page_stats import (
    WORK_COLUMNS,
    PageStats,
    StatAccumulators,
    append_kv,
    append_kv_naive,
)
from unique_asr.kernels.select_pages.registry import SCORES, STATISTICS, STATS_DTYPES, statistics_for

APPEND_BACKENDS = {"triton": append_kv, "torch": append_kv_naive}


def _ranges(first: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten ranges [first[i], first[i] + count[i]) (count >= 0): (owner index i, value) per element."""
    owner = np.repeat(np.arange(first.shape[0]), count)
    offset = np.arange(owner.shape[0]) - np.repeat(np.cumsum(count) - count, count)
    return owner, first[owner] + offset


def upload(array: np.ndarray, device: torch.device | str, out: torch.Tensor | None = None) -> torch.Tensor:
    """A device copy of host `array` (into `out` when given), stream-ordered, that does not make the host wait.
    A copy to the GPU from pageable memory first waits for the device's queue (CUDA's documented behaviour for
    pageable transfers), so a decode loop that reserves pages on the host before each step would stall on every
    step until the previous one finished (H200, llm-decode 16 layers, batch 80: wall 4.32 ms a step against 3.91
    of device time, both halves in series); from pinned memory the copy is queued and the host goes on. PyTorch's
    pinned allocator holds the staging block until its copy has run, so `array` may change at once."""
    t = torch.from_numpy(np.ascontiguousarray(array))
    if torch.device(device).type == "cuda":
        t = t.pin_memory()
        return t.to(device, non_blocking=True) if out is None else out.copy_(t, non_blocking=True)
    return t.to(device) if out is None else out.copy_(t)


class CacheFullError(UniqueASRError, RuntimeError):
    """The pool has too few free pages, or a sequence would outgrow its page-table row."""


@dataclass(frozen=True)
class AppendPlan:
    """One step's reservation, shared by every layer's append.

    work: int32 [W, 6] (`WORK_COLUMNS`) on the cache device; idle: int64 [n] sequences receiving no token
    (their accumulators are carried over); parity: accumulator half read (1 - parity is written);
    num_tokens: total new tokens (rows of the packed k, v); step: id that ties the plan to its cache state.
    """

    work: torch.Tensor
    idle: torch.Tensor
    parity: int
    num_tokens: int
    step: int


@dataclass(frozen=True)
class RowSnapshot:
    """A row's sequence held apart from any row (`PagedKVCache.snapshot`): its pages (one reference each),
    length and open-page accumulator state (the half the next step would have read)."""

    pages: np.ndarray
    length: int
    accumulators: tuple[torch.Tensor, ...]


class LayerCache(NamedTuple):
    """Per-layer views: k_pool, v_pool [P, S, Hkv, D]; stats (PageStats of that layer)."""

    k_pool: torch.Tensor
    v_pool: torch.Tensor
    stats: PageStats


class PagedKVCache:
    """K/V pools [L, P, S, Hkv, D], page table int32 [B, max_pages] (-1 padded), lengths int32 [B],
    page statistics per (layer, page, KV head), and fp32 Welford accumulators of each open page.

    modes: the scoring modes the cache will serve ("dense" or a name in the score registry); the cache keeps
        the statistics they read (`registry.statistics_for`: mean and std always, sigma for "perdim",
        kmin / kmax for "quest"), listed in `self.statistics`.
    stats_dtype: "pool" keeps the key means in the pool dtype; "fp8" as e4m3 codes, "int8" as int8 codes, with a
        per-(page, KV head) fp32 scale (`self.scale`; mu = mean * scale): D + 4 B instead of 2D B per page and
        head (`registry.CODE_MAX`).
    backend: "triton" or "torch" append kernel; "auto" is triton on CUDA, torch elsewhere.
    extra_statistics: statistics kept beyond what the modes read, by registry name (e.g. ("vmean",), the value
        means that SparsityConfig.unselected="estimate" reads: D pool-dtype values per page and head; ("rmean",),
        the key means in the pool dtype beside coded ones, that SparsityConfig.refine re-ranks candidates with).
    Every layer must append once per reserved step (the accumulators advance per step).
    """

    def __init__(self, *, num_layers: int, num_pages: int, page_size: int, num_kv_heads: int, head_dim: int,
                 max_batch: int, max_pages_per_seq: int | None = None, dtype: torch.dtype = torch.bfloat16,
                 device: str | torch.device = "cpu", modes: Sequence[str] = ("unique",),
                 backend: str = "auto", stats_dtype: str = "pool", extra_statistics: Sequence[str] = ()):
        if min(num_layers, num_pages, page_size, num_kv_heads, head_dim, max_batch) < 1:
            raise ValueError("cache sizes must all be >= 1")
        if dtype not in (torch.bfloat16, torch.float16, torch.float32):
            raise ValueError(f"cache dtype must be bf16, fp16 or fp32, got {dtype}")
        self.device = canonical_device(device)  # "cuda" -> "cuda:<current>": equal to its tensors' .device
        if backend == "auto":
            backend = "triton" if self.device.type == "cuda" else "torch"
        if backend not in APPEND_BACKENDS:
            raise ValueError(f"append backend {backend!r} is not one of {', '.join(APPEND_BACKENDS)}")
        self.backend = backend
        self.page_size, self.max_pages = page_size, max_pages_per_seq or num_pages
        L, P, S, H, D, B = num_layers, num_pages, page_size, num_kv_heads, head_dim, max_batch
        kw = {"device": self.device}
        self.k_pool = torch.zeros(L, P, S, H, D, dtype=dtype, **kw)
        self.v_pool = torch.zeros(L, P, S, H, D, dtype=dtype, **kw)
        unknown = [m for m in modes if m != "dense" and m not in SCORES]
        if unknown:
            raise ValueError(f"cache modes {unknown} are not dense or one of {', '.join(SCORES)}")
        if stats_dtype not in STATS_DTYPES:
            raise ValueError(f"stats_dtype {stats_dtype!r} is not one of {', '.join(STATS_DTYPES)}")
        unknown = [s for s in extra_statistics if s not in STATISTICS]
        if unknown:
            raise ValueError(f"cache statistics {unknown} are not in {', '.join(STATISTICS)}")
        if "rmean" in extra_statistics and stats_dtype not in CODE_DTYPES:
            raise ValueError("the rmean statistic (pool-dtype key means for re-ranking) is kept only beside coded "
                             f"means (stats_dtype {', '.join(CODE_DTYPES)}), not with stats_dtype {stats_dtype!r}")
        needed = set(statistics_for(modes, coded_means=stats_dtype in CODE_DTYPES)) | set(extra_statistics)
        self.statistics = tuple(s for s in STATISTICS if s in needed)

        def stat(name: str) -> torch.Tensor | None:
            if name not in self.statistics:
                return None
            per_dim = STATISTICS[name].per_dim
            kind = dtype if STATISTICS[name].dtype == "pool" else torch.float32
            if name == "mean" and stats_dtype in CODE_DTYPES:
                kind = CODE_DTYPES[stats_dtype]
            return torch.zeros(L, P, H, *((D,) if per_dim else ()), dtype=kind, **kw)

        self.mean, self.std, self.sigma, self.kmin, self.kmax, self.scale, self.vmean, self.rmean = (
            stat(n) for n in PageStats._fields)
        self.acc_mean = torch.zeros(L, 2, B, H, D, dtype=torch.float32, **kw)
        self.acc_m2 = torch.zeros(L, 2, B, H, dtype=torch.float32, **kw)
        perdim = self.sigma is not None
        self.acc_m2d = torch.zeros(L, 2, B, H, D, dtype=torch.float32, **kw) if perdim else None
        self.acc_vmean = torch.zeros(L, 2, B, H, D, dtype=torch.float32, **kw) if self.vmean is not None else None
        self.page_table = torch.full((B, self.max_pages), -1, dtype=torch.int32, **kw)
        self.lengths = torch.zeros(B, dtype=torch.int32, **kw)
        self._work_buf = torch.zeros(B, len(WORK_COLUMNS), dtype=torch.int32, **kw)
        self._idle_buf = torch.zeros(B, dtype=torch.int64, **kw)  # a plan's idle rows, at one address (graphs)
        self._table = np.full((B, self.max_pages), -1, dtype=np.int32)
        self._lengths = np.zeros(B, dtype=np.int64)
        self._free = list(range(P - 1, -1, -1))
        self._refs = np.zeros(P, dtype=np.int64)  # holders (rows, snapshots) of each physical page
        self._step = 0
        # views built once: the per-layer append then costs one kernel launch of host time
        self._layers = [self._layer_views(layer) for layer in range(L)]
        accs = (self.acc_mean, self.acc_m2, self.acc_m2d, self.acc_vmean)  # StatAccumulators' field order
        self._accs = [[StatAccumulators(*(None if a is None else a[layer, half] for a in accs)) for half in (0, 1)]
                      for layer in range(L)]
        self._kv_shape = (H, D)

    @property
    def num_free_pages(self) -> int:
        return len(self._free)

    @property
    def nbytes(self) -> int:
        """Device bytes the cache holds: K/V pools, page statistics, their accumulators, page table and lengths.
        Built on the "meta" device it allocates nothing, so this sizes a cache before it exists."""
        tensors = (self.k_pool, self.v_pool, *self._stat_tensors(), *self._accumulators(), self.page_table,
                   self.lengths, self._work_buf, self._idle_buf)
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def host_lengths(self) -> np.ndarray:
        """Tokens held by every row, int64 [B] (a host copy: reading it never waits for the device, unlike
        `self.lengths`)."""
        return self._lengths.copy()

    def references(self) -> np.ndarray:
        """Holders (rows and snapshots) of every physical page, int64 [P] (a copy): 0 for a free page."""
        return self._refs.copy()

    def _take(self, count: int) -> np.ndarray:
        """Pop `count` free pages (one reference each), in the order the free list hands them out."""
        new = np.asarray(self._free[len(self._free) - count:][::-1], dtype=np.int32)
        del self._free[len(self._free) - count:]
        self._refs[new] = 1
        return new

    def _drop(self, pages) -> None:
        """Drop one reference to each listed page; pages no one holds return to the free list (in reverse list
        order, so the next reservation hands them out in list order)."""
        pages = np.asarray(pages, dtype=np.int64).reshape(-1)
        if not pages.size:
            return
        np.subtract.at(self._refs, pages, 1)
        if (self._refs[pages] < 0).any():
            raise RuntimeError("page reference count below zero (a page dropped more often than it was held)")
        freed = list(dict.fromkeys(int(p) for p in pages if self._refs[p] == 0))
        self._free.extend(freed[::-1])

    @property
    def _current_half(self) -> int:
        """The accumulator half holding every row's open-page state between steps (step s reads s % 2 and
        writes the other, idle rows carried over), i.e. the one the next step reads."""
        return (self._step + 1) % 2

    def _accumulators(self) -> list[torch.Tensor]:
        return [a for a in (self.acc_mean, self.acc_m2, self.acc_m2d, self.acc_vmean) if a is not None]

    def _copy_pages(self, old: np.ndarray, new: np.ndarray) -> None:
        """Device copy of pages old -> new (K/V and every statistic, all layers)."""
        src, dst = upload(old.astype(np.int64), self.device), upload(new.astype(np.int64), self.device)
        for t in (self.k_pool, self.v_pool, *self._stat_tensors()):
            if t is not None:
                t.index_copy_(1, dst, t.index_select(1, src))

    def _sync_rows(self, rows: np.ndarray) -> None:
        """Device page table and lengths of `rows` from their host copies."""
        if rows.size:
            idx = upload(rows.astype(np.int64), self.device)
            self.page_table[idx] = upload(self._table[rows], self.device)
            self.lengths[idx] = upload(self._lengths[rows].astype(np.int32), self.device)

    def share(self, dst: Sequence[int], src: Sequence[int]) -> None:
        """Rows dst[i] become copies of rows src[i], all read before any is written (so a permutation works):
        the same pages (by reference, see the module docstring), length and open-page accumulators. dst's
        former pages are dropped. Beam search: expand a window's prompt row to its beams, reorder beams."""
        dst, src = np.asarray(dst, dtype=np.int64), np.asarray(src, dtype=np.int64)
        if dst.shape != src.shape or len(set(dst.tolist())) != dst.size:
            raise ValueError(f"share needs distinct destination rows, one per source, got {dst} <- {src}")
        if (dst == src).all():
            return
        S = self.page_size
        tables, lengths = self._table[src].copy(), self._lengths[src].copy()
        for table, length in zip(tables, lengths):
            np.add.at(self._refs, table[: -(-int(length) // S)].astype(np.int64), 1)
        former = [self._table[d, : -(-int(self._lengths[d]) // S)].copy() for d in dst]
        self._table[dst], self._lengths[dst] = tables, lengths
        for pages in former:
            self._drop(pages)
        self._sync_rows(dst)
        d, s_ = (upload(x, self.device) for x in (dst, src))
        for acc in self._accumulators():
            acc[:, :, d] = acc[:, :, s_]

    def snapshot(self, row: int) -> RowSnapshot:
        """Hold row `row`'s sequence apart (its pages gain a reference each; see `load_snapshot`)."""
        pages = self._table[row, : -(-int(self._lengths[row]) // self.page_size)].copy()
        np.add.at(self._refs, pages.astype(np.int64), 1)
        return RowSnapshot(pages, int(self._lengths[row]),
                           tuple(a[:, self._current_half, row].clone() for a in self._accumulators()))

    def load_snapshot(self, row: int, snap: RowSnapshot) -> None:
        """Row `row` becomes the snapshot's sequence (its former pages dropped); the snapshot stays valid
        until `drop_snapshot`."""
        former = self._table[row, : -(-int(self._lengths[row]) // self.page_size)].copy()
        np.add.at(self._refs, snap.pages.astype(np.int64), 1)
        self._table[row] = -1
        self._table[row, : snap.pages.size] = snap.pages
        self._lengths[row] = snap.length
        self._drop(former)
        self._sync_rows(np.asarray([row]))
        for acc, saved in zip(self._accumulators(), snap.accumulators):
            # into the half the next step reads: steps taken since the snapshot may have flipped it
            acc[:, self._current_half, row] = saved

    def drop_snapshot(self, snap: RowSnapshot) -> None:
        """Give the snapshot's page references back."""
        self._drop(snap.pages)

    def layer(self, layer: int) -> LayerCache:
        """Views of one layer's pools and statistics (no copies)."""
        return self._layers[layer]

    def _stat_tensors(self) -> tuple[torch.Tensor | None, ...]:
        """Every statistic's [L, P, ...] tensor (None where not kept), in PageStats' field order."""
        return tuple(getattr(self, name) for name in PageStats._fields)

    def _layer_views(self, layer: int) -> LayerCache:
        stats = PageStats(*(None if t is None else t[layer] for t in self._stat_tensors()))
        return LayerCache(self.k_pool[layer], self.v_pool[layer], stats)

    def reserve(self, new_tokens: Sequence[int] | torch.Tensor) -> AppendPlan:
        """Allocate pages for `new_tokens[b]` more tokens per sequence, advance lengths, return the plan.

        Raises CacheFullError (and changes nothing) when pages or page-table columns run out.
        """
        n = np.asarray(torch.as_tensor(new_tokens).cpu(), dtype=np.int64).reshape(-1)
        if n.shape[0] != self._lengths.shape[0] or (n < 0).any():
            raise ValueError(f"new_tokens must be {self._lengths.shape[0]} counts >= 0, got {n.tolist()}")
        S = self.page_size
        start, end = self._lengths, self._lengths + n
        held, needed = -(-start // S), -(-end // S)
        if needed.max(initial=0) > self.max_pages:
            raise CacheFullError(f"a sequence would need {needed.max()} pages; "
                                 f"the page table holds {self.max_pages}")
        copy_rows = self._shared_writes(start, n, held)
        grow = needed - held
        if grow.sum() + len(copy_rows) > len(self._free):
            missing = grow.sum() + len(copy_rows)
            raise CacheFullError(f"KV pool full: {missing} pages needed, {len(self._free)} free")
        changed = []
        if copy_rows:  # copy-on-write of shared partial pages before anything writes into them
            rows_c = np.asarray(copy_rows, dtype=np.int64)
            old = self._table[rows_c, held[rows_c] - 1].copy()
            new = self._take(len(copy_rows))
            self._copy_pages(old, new)
            self._table[rows_c, held[rows_c] - 1] = new
            self._drop(old)
            changed.append(rows_c)
        rows, lps = _ranges(held, grow)                     # (sequence, logical page) of each new page
        if rows.size:
            self._table[rows, lps] = self._take(rows.size)
            changed.append(rows)
        if changed:
            changed = np.unique(np.concatenate(changed))  # whole-row copies: far cheaper than an element scatter
            self.page_table[upload(changed, self.device)] = upload(self._table[changed], self.device)
        work = self._work_list(start, n)
        # decode-sized plans live at one device address, so a captured CUDA graph sees each new plan
        buf = self._work_buf[: work.shape[0]] if work.shape[0] <= self._work_buf.shape[0] else None
        work = upload(work, self.device, out=buf)
        self._lengths = end
        upload(end.astype(np.int32), self.device, out=self.lengths)
        self._step += 1
        idle = np.nonzero(n == 0)[0]  # none on a step over every row: nothing to copy
        idle = upload(idle, self.device, out=self._idle_buf[: idle.shape[0]]) if idle.size else self._idle_buf[:0]
        return AppendPlan(work=work, idle=idle,
                          parity=self._step % 2, num_tokens=int(n.sum()), step=self._step)

    def _shared_writes(self, start: np.ndarray, n: np.ndarray, held: np.ndarray) -> list[int]:
        """Rows whose new tokens go into a partial last page that others hold too, one copy each: of several rows
        sharing one page with no other holder, the last keeps it (its count falls to one as the others copy)."""
        rows = np.nonzero((n > 0) & (start % self.page_size != 0))[0]
        refs = {}
        out = []
        for row in rows.tolist():
            page = int(self._table[row, held[row] - 1])
            left = refs.setdefault(page, int(self._refs[page]))
            if left > 1:
                out.append(row)
                refs[page] = left - 1
        return out

    def _work_list(self, start: np.ndarray, n: np.ndarray) -> np.ndarray:
        """int32 [W, 6] rows (seq, physical page, first packed token, n_new, n_old, is_last), vectorised."""
        S = self.page_size
        active = n > 0
        first_lp = np.where(active, start // S, 0)
        last_lp = np.where(active, (start + n - 1) // S, -1)
        seq, lp = _ranges(first_lp, last_lp - first_lp + 1)
        s, e = start[seq], start[seq] + n[seq]
        first, stop = np.maximum(s, lp * S), np.minimum(e, (lp + 1) * S)
        base = (np.cumsum(n) - n)[seq]
        work = np.stack([seq, self._table[seq, lp], base + first - s, stop - first, first - lp * S,
                         lp == last_lp[seq]], axis=1)
        return np.ascontiguousarray(work.reshape(-1, len(WORK_COLUMNS)), dtype=np.int32)

    def append(self, layer: int, plan: AppendPlan, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write packed new tokens k, v [plan.num_tokens, Hkv, D] (sequence-major) of `layer` into their
        reserved slots and update that layer's page statistics."""
        if plan.step != self._step:
            raise ValueError("stale AppendPlan: every append must use the plan of the latest reserve()")
        want = (plan.num_tokens, *self._kv_shape)
        for name, t in (("k", k), ("v", v)):
            if tuple(t.shape) != want or not t.is_floating_point() or t.device != self.device:
                raise ValueError(f"{name} must be a float tensor {list(want)} on {self.device} "
                                 f"for this plan, got {t.dtype} {list(t.shape)} on {t.device}")
        acc_in, acc_out = self._accs[layer][plan.parity], self._accs[layer][1 - plan.parity]
        if plan.idle.numel():
            for a_in, a_out in zip(acc_in, acc_out):
                if a_in is not None:
                    a_out[plan.idle] = a_in[plan.idle]
        view = self._layers[layer]
        APPEND_BACKENDS[self.backend](k, v, plan.work, view.k_pool, view.v_pool, view.stats, acc_in, acc_out,
                                      validate=False)

    def extend(self, new_tokens: Sequence[int] | torch.Tensor,
               kv: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> AppendPlan:
        """Reserve and append one chunk to every layer at once, kv[l] = (k, v) packed
        [sum(new_tokens), Hkv, D]: a prefill, or a whole encoder window's cross-attention memory (and
        its page statistics)."""
        if len(kv) != len(self._layers):
            raise ValueError(f"kv must hold one (k, v) pair per layer ({len(self._layers)}), got {len(kv)}")
        plan = self.reserve(new_tokens)
        for layer, (k, v) in enumerate(kv):
            self.append(layer, plan, k, v)
        return plan

    def release(self, seqs: Sequence[int]) -> None:
        """Empty sequences `seqs` (length 0); pages no other row or snapshot holds return to the free list."""
        rows = np.asarray(list(seqs), dtype=np.int64)
        for b in rows:
            held = -(-int(self._lengths[b]) // self.page_size)
            self._drop(self._table[b, :held].copy())
            self._table[b] = -1
            self._lengths[b] = 0
        if rows.size:
            idx = upload(rows, self.device)
            # index_fill_ takes the value as a scalar argument: `t[idx] = -1` copies a host scalar tensor to the
            # device and waits for the device's queue (sync debug mode, H100)
            self.page_table.index_fill_(0, idx, -1)
            self.lengths.index_fill_(0, idx, 0)

    def evict(self, seq: int, first: int, count: int) -> None:
        """Drop logical pages [first, first + count) of sequence `seq` (e.g. the oldest pages after `first`
        sink pages): later pages move up the page table, the length shrinks by count·S, the physical pages
        are dropped (free when no other holder). Kept pages' K/V and statistics and the open page's accumulators are
        untouched. The last (open) page cannot be evicted. Raises ValueError on a bad range."""
        S = self.page_size
        held = -(-int(self._lengths[seq]) // S)
        if count < 1 or first < 0 or first + count >= held:
            raise ValueError(f"cannot evict pages [{first}, {first + count}) of a sequence holding {held} "
                             "(the last page stays)")
        row = self._table[seq]
        self._drop(row[first:first + count].copy())
        row[first:held - count] = row[first + count:held].copy()
        row[held - count:held] = -1
        self._lengths[seq] -= count * S
        upload(row, self.device, out=self.page_table[seq])
        self.lengths[seq].fill_(int(self._lengths[seq]))
