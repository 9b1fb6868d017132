"""Batched mode with the previous text: which windows form a stripe, and what prompts its first window.

A recording's windows are taken in blocks of `block_size` consecutive indices (block b: indices
[b * block_size, (b + 1) * block_size); the audio of one block is held at once). A block is split into at most
`width` (the batch size) stripes of consecutive windows; the stripes decode in lockstep, one window (or one
remainder of a window) per stripe and batch, each conditioned on the text its own stripe decoded before it, as
sequential mode conditions on all of the text before it. With width 1 every block is one stripe that continues
the block before it: sequential mode.

The plan depends only on window indices, the block size and the width, never on how far a run got, so a run
resumed from a journal (which holds the windows before some index) cuts the same stripes as an uninterrupted
run and decodes every window with the same prompt.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from unique_asr.windows import Window

# Windows per stripe and block: a block holds batch_size x this many windows (at batch 16 and 30 s windows:
# 128 windows, 64 min of audio, 245 MB of float32 samples held at once). A stripe's first window has no
# previous text; with 8 windows a stripe, 7 of 8 windows of a long recording are conditioned as in sequential
# mode.
STRIPE_WINDOWS = 8


@dataclass(frozen=True)
class Stripe:
    """Consecutive windows of one block that one sequential cursor decodes. first: the stripe's first index in
    the plan (its windows may start later: the ones before are journaled); continues: its first window is
    prompted with the text before it (the first stripe of a block, or a stripe resumed mid-way)."""

    first: int
    windows: tuple[Window, ...]
    continues: bool


def striped(strategy: str, stripe_windows: int, condition_on_previous_text: bool) -> bool:
    """Whether a run decodes in stripes: batched, stripe_windows >= 1, conditioned on the previous text."""
    return strategy == "batched" and stripe_windows > 0 and bool(condition_on_previous_text)


def blocks(windows: Iterable[Window], block_size: int) -> Iterator[list[Window]]:
    """Consecutive windows grouped by index block (a resumed run's first block starts mid-block)."""
    block: list[Window] = []
    for window in windows:
        if block and window.index // block_size != block[0].index // block_size:
            yield block
            block = []
        block.append(window)
    if block:
        yield block


def split(count: int, width: int, least: int = 1) -> list[range]:
    """Indices 0..count-1 as at most `width` runs of consecutive indices, each of at least `least` indices
    (unless there are fewer), as even as possible (longer first)."""
    n = max(1, min(width, count // least))
    size, extra = divmod(count, n)
    runs, start = [], 0
    for i in range(n):
        runs.append(range(start, start + size + (i < extra)))
        start = runs[-1].stop
    return runs


def block_size(width: int, least: int = 1) -> int:
    """Windows per block for `width` stripes of at least `least` windows."""
    return width * max(STRIPE_WINDOWS, least)


def stripes(block: list[Window], block_size: int, width: int, least: int = 1) -> list[Stripe]:
    """The stripes of one block (its windows in index order; at most `width`, of at least `least` windows),
    planned over the whole block from its first index, the journaled windows included; stripes left with no
    window to decode are left out."""
    base = block[0].index - block[0].index % block_size
    out = []
    for k, run in enumerate(split(block[-1].index + 1 - base, width, least)):
        todo = tuple(w for w in block if w.index - base in run)
        if todo:
            first = base + run.start
            out.append(Stripe(first, todo, continues=k == 0 or todo[0].index != first))
    return out
