"""One decode step (T = 1) of a batch of rows of any model family, captured in a CUDA graph and replayed.

Written against the family interface (unique_asr.models.family): the step `model.step(tokens, state, memory)`
reads and writes only preallocated state (Whisper: the self-attention cache and the cross memory, contiguous or
paged pools + page table + lengths) and a static token buffer. Replays therefore see new contents of those
tensors (a new window batch written into the same pools by `WhisperModel.cross_memory(..., out=memory)`, beams
reordered in place with `model.reorder`) as long as no tensor is replaced.

A state with a two-phase step (`plan_step`: decoder-only families, whose step reserves pages on the host) has
its host half run before every replay and its device half (`model.step_planned`) captured, one graph per key
that `plan_step` returns (PagedRows: the plan's accumulator parity and the page-table width read, and the number
of rows when a step appends to some of them only: continuous batching's tail, once no recording is left to take
a free row, replays too instead of launching every kernel from the host).
"""

from __future__ import annotations

import torch

from unique_asr.models.family import DecodeState, ModelFamily


class CapturedDecodeStep:
    """`model.step(tokens [B, 1], state, memory)` as a CUDA graph.

    Call with int64 tokens [B, 1]: copies them into the static buffer, replays, and returns the static logits
    buffer [B, 1, V] float32 (overwritten by the next call; clone to keep). The state advances by one token per
    call, as in `step`. Capture runs `warmup` eager steps on a side stream first (lazy init, Triton
    compilation), restoring the state after each (`state.save()` / `state.restore`); capture records the step
    without running it. Two-phase states (module docstring) are captured at their first call per key.
    """

    def __init__(self, model: ModelFamily, state: DecodeState, memory, *, warmup: int = 2):
        self.device = next(model.parameters()).device
        if self.device.type != "cuda":
            raise ValueError(f"CUDA graph capture needs CUDA tensors, got {self.device}")
        # the graph holds raw addresses of these tensors, not references: keep them alive as long as it lives
        self.model, self.state, self.memory, self.warmup = model, state, memory, warmup
        self.tokens = torch.zeros(state.rows, 1, dtype=torch.int64, device=self.device)
        self.planned = callable(getattr(state, "plan_step", None))
        self._run = model.step_planned if self.planned else model.step
        self.graphs: dict[object, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        if not self.planned:
            self._capture(None, self.tokens)

    def _capture(self, key, tokens: torch.Tensor) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        state, memory, device = self.state, self.memory, self.device
        start = state.save()
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(self.warmup):
                self._run(tokens, state, memory)
                state.restore(start)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: other threads may use CUDA meanwhile (the window prefetcher runs the VAD's GPU front on
        # its own stream); the default "global" mode lets any such call invalidate this capture
        with torch.no_grad(), torch.cuda.graph(graph, capture_error_mode="thread_local"):
            logits = self._run(tokens, state, memory)
        self.graphs[key] = graph, logits
        return graph, logits

    @property
    def logits(self) -> torch.Tensor:
        """The output buffer of the graph captured first (single-graph families: the only one)."""
        return next(iter(self.graphs.values()))[1]

    def __call__(self, tokens: torch.Tensor, rows=None) -> torch.Tensor:
        """tokens int64 [B, 1] -> logits [B, 1, V] float32 (the static output buffer of the replayed graph).
        rows (two-phase states): the ascending rows that take a token, tokens [len(rows), 1]; None: every row."""
        if rows is not None and not self.planned:
            raise ValueError("a step over some rows needs a two-phase state (plan_step)")
        if tokens.shape[0] != (self.tokens.shape[0] if rows is None else len(rows)):
            raise ValueError(f"tokens for {tokens.shape[0]} rows, the step takes "
                             f"{self.tokens.shape[0] if rows is None else len(rows)}")
        key = self.state.plan_step(rows) if self.planned else None
        static = self.tokens[: tokens.shape[0]]
        static.copy_(tokens)
        graph, logits = self.graphs.get(key) or self._capture(key, static)
        graph.replay()
        return logits
