"""One Whisper decode step (T = 1) of a batch of rows captured in a CUDA graph and replayed.

The step reads and writes only preallocated state: the self-attention cache (k, v, lengths), the cross memory
(contiguous, or paged pools + page table + lengths) and a static token buffer. Replays therefore see new
contents of those tensors (a new window batch written into the same pools by `WhisperModel.cross_memory(...,
out=memory)`, beams reordered in place with `reorder`) as long as no tensor is replaced.
"""

from __future__ import annotations

import torch

from unique_asr.models.cross_memory import CrossMemory, PagedCrossMemory
from unique_asr.models.whisper import SelfAttentionCache, WhisperModel


class CapturedDecodeStep:
    """`model.decode(tokens [B, 1], self_cache, cross)` as a CUDA graph.

    Call with int64 tokens [B, 1]: copies them into the static buffer, replays, and returns the static logits
    buffer [B, 1, V] float32 (overwritten by the next call; clone to keep). self_cache.lengths advances by 1
    per call, as in `decode`. Capture runs `warmup` eager steps on a side stream first (lazy init, Triton
    compilation), restoring the cache lengths after each; capture records the step without running it.
    """

    def __init__(self, model: WhisperModel, self_cache: SelfAttentionCache,
                 cross: CrossMemory | PagedCrossMemory, *, warmup: int = 2):
        device = self_cache.k.device
        if device.type != "cuda":
            raise ValueError(f"CUDA graph capture needs CUDA tensors, got {device}")
        # the graph holds raw addresses of these tensors, not references: keep them alive as long as it lives
        self.self_cache, self.cross = self_cache, cross
        self.tokens = torch.zeros(self_cache.k.shape[1], 1, dtype=torch.int64, device=device)
        start = self_cache.lengths.clone()
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(warmup):
                model.decode(self.tokens, self_cache, cross)
                self_cache.lengths.copy_(start)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: other threads may use CUDA meanwhile (the window prefetcher runs the VAD's GPU front on
        # its own stream); the default "global" mode lets any such call invalidate this capture
        with torch.no_grad(), torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.logits = model.decode(self.tokens, self_cache, cross)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens int64 [B, 1] -> logits [B, 1, V] float32 (the static output buffer)."""
        self.tokens.copy_(tokens)
        self.graph.replay()
        return self.logits
