"""Dense Whisper cross memory laid out for the CPU's decode step (mode "dense" on the CPU).

The one-token step reads every cross key and value of its window once per layer: on the CPU those bytes
weigh as much as the weights (base, 3 windows: 110 MB per step against 49 MB of int8 weights). Two changes
to `CrossMemory`:

- Layout: keys are stored transposed per head, K^T [L, W, H, D, F], and values per head, V [L, W, H, F, D],
  so that scores and outputs are two batched matmuls over contiguous rows. For the 6 layers of 3 windows (base,
  2 threads, machine load 5) torch's CPU flash-attention kernel on the head-strided [L, B, F, H, D] layout
  took 11.7 ms of CPU per step, the two matmuls 8.4 ms.
- Sharing: the rows of one window (beams, best_of samples) read one copy of its memory; their queries are
  attended together as the window's query rows (a [group, F] score block per head), so beam 5 reads the
  window's memory once per step instead of five times, and expanding to beams copies nothing (base int8,
  3 windows x 5 beams: 103-108 -> 44-52 ms of CPU per decoder step, load 8).

`k` and `v` are [L, W, F, H, D] views of the same storage (one row per window), as `CrossMemory`'s.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class CpuCrossMemory:
    """Cross-attention keys/values of W windows, each shared by `group` consecutive decode rows.

    kt: [L, W, H, D, F] (keys transposed per head); vh: [L, W, H, F, D]; rows = W x group.
    """

    def __init__(self, kt: torch.Tensor, vh: torch.Tensor, group: int = 1):
        self.kt, self.vh, self.group = kt, vh, group

    @classmethod
    def build(cls, layers: int, kv: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
              like: torch.Tensor, heads: int) -> CpuCrossMemory:
        """From kv(layer) -> k, v [W, F, H, D] (one layer at a time, written into the final tensors)."""
        W, F, d = like.shape
        D = d // heads
        kt = like.new_empty((layers, W, heads, D, F))
        vh = like.new_empty((layers, W, heads, F, D))
        for layer in range(layers):
            k, v = kv(layer)
            kt[layer].copy_(k.permute(0, 2, 3, 1))
            vh[layer].copy_(v.permute(0, 2, 1, 3))
            del k, v
        return cls(kt, vh)

    @property
    def k(self) -> torch.Tensor:
        """[L, W, F, H, D] view (one row per window)."""
        return self.kt.permute(0, 1, 4, 2, 3)

    @property
    def v(self) -> torch.Tensor:
        """[L, W, F, H, D] view (one row per window)."""
        return self.vh.permute(0, 1, 3, 2, 4)

    @property
    def windows(self) -> int:
        return self.kt.shape[1]

    @property
    def batch(self) -> int:
        return self.windows * self.group

    def index_select(self, index: torch.Tensor) -> CpuCrossMemory:
        """Memory whose row i is row index[i] (int64 [B']). Expanding each window into g consecutive rows
        (index = arange(B).repeat_interleave(g), the prompt's cache copied to beams) shares the storage."""
        index = index.to(self.kt.device)
        n, g = index.numel(), self.group
        if n % self.batch == 0:
            more = n // self.batch
            if torch.equal(index, torch.arange(self.batch, device=index.device).repeat_interleave(more)):
                return CpuCrossMemory(self.kt, self.vh, g * more)
        windows = torch.div(index, g, rounding_mode="floor")
        if g > 1 and n % g == 0:  # whole windows (finished ones dropped): their rows keep sharing
            first = windows[::g]
            if torch.equal(index, (first[:, None] * g + torch.arange(g, device=index.device)).flatten()):
                return CpuCrossMemory(self.kt.index_select(1, first), self.vh.index_select(1, first), g)
        return CpuCrossMemory(self.kt.index_select(1, windows), self.vh.index_select(1, windows))

    def reorder(self, index: torch.Tensor) -> None:
        """In place: row i becomes row index[i] (int64 [B]). Rows sharing a window may only take rows of the
        same window (beam search reorders beams within their window), which leaves the storage as it is."""
        windows = torch.div(index.to(self.kt.device), self.group, rounding_mode="floor")
        if self.group > 1:
            own = torch.arange(self.batch, device=windows.device) // self.group
            if not torch.equal(windows, own):
                raise ValueError("rows that share a window's memory can only reorder within their window")
            return
        self.kt.copy_(self.kt.index_select(1, windows))
        self.vh.copy_(self.vh.index_select(1, windows))

    def attend(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        """q [B, T, H, D] (B = windows x group) -> [B, T, H, D]: exact softmax over all F frames of the row's
        window, the group's B/W x T queries of a window in one score block per head."""
        B, T, H, D = q.shape
        if B != self.batch:
            raise ValueError(f"batch mismatch: queries {B}, memory {self.batch}")
        qh = q.reshape(self.windows, self.group * T, H, D).transpose(1, 2) * D**-0.5  # [W, H, gT, D]
        probs = torch.softmax(torch.matmul(qh, self.kt[layer]), dim=-1)  # [W, H, gT, F]
        out = torch.matmul(probs.to(self.vh.dtype), self.vh[layer])  # [W, H, gT, D]
        return out.transpose(1, 2).reshape(B, T, H, D).to(q.dtype)
