"""The token loop's model step over the windows still being searched (eager decoding: the CPU).

A batch of windows decodes until its longest window is done; rows of finished windows are fed <|endoftext|> to
keep the step's shapes static, which a captured CUDA graph needs. Eagerly there is no such need, and on the CPU
a step's cost grows with its rows (each row reads its window's whole cross memory: base, 30 s windows, 18 MB
per row and step in float32). `ActiveRows` drops the rows of finished windows from the decode state and memory
(`model.expand`, a copy of what remains, once per finished window), runs the step on the rest and returns logits
for every row (zeros for dropped rows: the searches never read them, as a finished window's rows only take
<|endoftext|> or are already collected).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class ActiveRows:
    """step / reorder for the token loop over N = windows x group rows, of which `retire` removes whole windows."""

    def __init__(self, model, state, memory, windows: int, group: int, device: torch.device):
        self.model, self.state, self.memory, self.group, self.device = model, state, memory, group, device
        self.n = windows * group
        self.windows = list(range(windows))  # live windows, in order
        self.rows: torch.Tensor | None = None  # full-batch indices of the live rows (None: all rows)
        self.position: torch.Tensor | None = None  # full-batch row -> row in the compacted state (-1: dropped)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens int64 [N, 1] -> logits [N, 1, V] (zeros on dropped rows)."""
        if self.rows is None:
            return self.model.step(tokens, self.state, self.memory)
        live = self.model.step(tokens.index_select(0, self.rows), self.state, self.memory)
        logits = live.new_zeros((self.n, *live.shape[1:]))
        return logits.index_copy_(0, self.rows, live)

    def reorder(self, index: torch.Tensor) -> None:
        """Row i continues row index[i] (int64 [N]; beams stay within their window)."""
        if self.rows is not None:
            index = self.position[index.index_select(0, self.rows)]
        self.model.reorder(self.state, self.memory, index)

    def retire(self, windows: Iterable[int]) -> None:
        """Stop stepping these windows (indices into the batch). The last live window is kept: the loop ends
        with it."""
        done = set(windows)
        live = [w for w in self.windows if w not in done]
        if not live or len(live) == len(self.windows):
            return
        device = self.device
        rows = (torch.tensor(live, device=device)[:, None] * self.group
                + torch.arange(self.group, device=device)).flatten()
        compact = rows if self.position is None else self.position[rows]
        self.state, self.memory = self.model.expand(self.state, self.memory, compact)
        self.windows, self.rows = live, rows
        self.position = torch.full((self.n,), -1, dtype=torch.int64, device=device)
        self.position[rows] = torch.arange(rows.numel(), device=device)
