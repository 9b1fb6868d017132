"""Streaming long-form transcription with a decoder-only speech-LLM: the whole recording stays in context.

Audio arrives chunk by chunk (30 s windows). For each chunk, its audio tokens (between the chunk's prefix and
suffix text ids) are prefilled into the paged KV cache, then that chunk's transcript is generated greedily, one
decode step per token, with attention over everything held so far (sparse by the SparsityConfig). Every
generated token, the final end-of-turn id included, stays in the cache as context for the next chunk.

Memory is capped: past `max_pages` pages, the oldest pages after the prompt's (sink) pages are evicted, whole
pages at a time; rotary positions keep counting, so kept keys keep the positions they were stored with.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from unique_asr.audio import SAMPLE_RATE, LogMel, Source, stream
from unique_asr.cache import CacheFullError, PagedKVCache
from unique_asr.config import SparsityConfig
from unique_asr.models.llm import allocate_cache
from unique_asr.models.speech_llm import SpeechLLM


@dataclass(frozen=True)
class StreamingOptions:
    """prompt_ids: text before the first chunk (kept forever: the sink pages); chunk_prefix_ids /
    chunk_suffix_ids: text around each chunk's audio tokens (e.g. a user turn asking for a transcript);
    eos_ids: ids that end a chunk's transcript; max_pages: cap on pages held (None: the whole pool);
    num_pages: pool size; cache_dtype: pool dtype (half precision for the Triton kernels)."""

    prompt_ids: tuple[int, ...] = ()
    chunk_prefix_ids: tuple[int, ...] = ()
    chunk_suffix_ids: tuple[int, ...] = ()
    eos_ids: tuple[int, ...] = ()
    max_new_tokens: int = 128
    num_pages: int = 4096
    max_pages: int | None = None
    cache_dtype: torch.dtype = torch.float32
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.max_pages is not None and not 2 <= self.max_pages <= self.num_pages:
            raise ValueError(f"max_pages must be in [2, num_pages={self.num_pages}], got {self.max_pages}")


@dataclass(frozen=True)
class ChunkResult:
    """One chunk's transcript ids (ending with an eos id if one was produced) and, if asked, the fp32 logits
    [len(tokens), V] each was chosen from."""

    tokens: list[int]
    logits: torch.Tensor | None = None


def evict_pages(cache: PagedKVCache, seq: int, first: int, count: int) -> None:
    """Drop logical pages [first, first + count) of sequence `seq` (`PagedKVCache.evict`): later pages move
    up, the length shrinks by count·S, the physical pages return to the free list; kept pages, the open
    page's accumulators and rotary positions are untouched. The last (open) page cannot be evicted."""
    cache.evict(seq, first, count)


class StreamingSession:
    """One recording: `feed` a chunk's log-mel window(s), get that chunk's transcript ids."""

    def __init__(self, model: SpeechLLM, options: StreamingOptions, device: str | torch.device = "cpu"):
        self.model, self.options = model, options
        self.cache = allocate_cache(model.llm.config, options.sparsity, batch=1, num_pages=options.num_pages,
                                    dtype=options.cache_dtype, device=device)
        self.max_pages = options.max_pages or options.num_pages
        self.position = 0  # rotary position of the next token (counts evicted tokens too)
        S = options.sparsity.page_size
        self.sink_pages = -(-len(options.prompt_ids) // S)
        if options.prompt_ids:
            self._prefill(self.model.llm.embed_tokens(self._ids(options.prompt_ids)))

    def _ids(self, ids: Sequence[int]) -> torch.Tensor:
        return torch.tensor([list(ids)], dtype=torch.int64, device=self.cache.device)

    def _make_room(self, n: int) -> None:
        """Evict the oldest non-sink pages so that n more tokens fit under the page cap."""
        S = self.cache.page_size
        length = int(self.cache.lengths[0])
        excess = -(-(length + n) // S) - self.max_pages
        if excess > 0:
            held = -(-length // S)
            if self.sink_pages + excess >= held:
                raise CacheFullError(f"{n} new tokens do not fit in {self.max_pages} pages of {S} beside "
                                     f"{self.sink_pages} sink pages; raise max_pages")
            evict_pages(self.cache, 0, self.sink_pages, excess)

    def _prefill(self, x: torch.Tensor) -> torch.Tensor:
        """Append embeddings x [1, T, d]; fp32 logits [V] of the last token."""
        self._make_room(x.shape[1])
        llm = self.model.llm
        h = llm.prefill(x, self.cache, torch.tensor([self.position], device=x.device))
        self.position += x.shape[1]
        return llm.logits(h[0, -1])

    def _step(self, token: int) -> torch.Tensor:
        """Append one token; fp32 logits [V] of the next."""
        self._make_room(1)
        llm = self.model.llm
        x = llm.embed_tokens(self._ids([token])[:, 0])
        h = llm.decode_step(x, self.cache, torch.tensor([self.position], device=x.device), self.options.sparsity)
        self.position += 1
        return llm.logits(h[0])

    @torch.no_grad()
    def feed(self, mel: torch.Tensor, return_logits: bool = False) -> ChunkResult:
        """mel [W, n_mels, 2·n_audio_ctx] (W windows of this chunk) -> its greedy transcript ids."""
        o, model = self.options, self.model
        audio = model.audio_embeddings(mel.to(self.cache.device)).flatten(0, 1)
        ids = [*o.chunk_prefix_ids, *[model.config.audio_token_id] * audio.shape[0], *o.chunk_suffix_ids]
        logits = self._prefill(model.embed(self._ids(ids), audio))
        tokens, seen = [], []
        while True:
            tokens.append(int(logits.argmax()))
            if return_logits:
                seen.append(logits)
            logits = self._step(tokens[-1])  # the chosen id joins the context, the end-of-turn id included
            if tokens[-1] in o.eos_ids or len(tokens) == o.max_new_tokens:
                return ChunkResult(tokens, torch.stack(seen) if return_logits else None)


def transcribe_stream(session: StreamingSession, source: Source, window_s: float = 30.0,
                      sample_rate: int | None = None) -> Iterator[tuple[float, float, list[int]]]:
    """Decode `source` in windows of window_s seconds (<= 30, padded to Whisper's 30 s log-mel) and feed each to
    the session; yields (start_s, end_s, transcript ids) per window, lazily."""
    if not 0 < window_s <= 30.0:
        raise ValueError(f"window_s must be in (0, 30], got {window_s}")
    mel = LogMel(session.model.config.encoder.n_mels, session.cache.device)
    start = 0
    for block in stream(source, block_s=window_s, sample_rate=sample_rate):
        end = start + block.shape[0]
        result = session.feed(mel(torch.from_numpy(np.ascontiguousarray(block))))
        yield start / SAMPLE_RATE, end / SAMPLE_RATE, result.tokens
        start = end
