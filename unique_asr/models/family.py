"""The model-family interface: what the token loops, the transcriber and the captured CUDA-graph step need from a
model, whatever its architecture (in the spirit of openai/whisper's `Inference` and flashinfer's plan/run).

A family's model object provides:
- `family`: its registry name ("whisper", "voxtral", "qwen2_audio", "speech-llm");
  `kind`: "encoder-decoder" (windows decoded independently against a cross-attention memory: Whisper) or
  "decoder-only" (a speech-LLM: audio tokens enter the decoder's own paged KV sequence);
- `sparsity` and `with_sparsity(sparsity)`: the attention setting (`SparsityConfig`) it runs with, passed as data;
  `with_sparsity` shares the weights;
- `memory(encoded)`: what a step reads besides its own state, from the encoder output (Whisper: the cross
  memory, dense or paged);
- `allocate_state(rows, capacity)`: per-row decode state (KV caches) for `rows` rows of at most `capacity`
  tokens, preallocated so that one step has static shapes;
- `step(tokens, state, memory)`: int64 tokens [N, T] -> float32 logits [N, T, V], extending each row's state;
- `expand(state, memory, index)`: a new (state, memory) whose row i copies row index[i] (a prompt's cache
  copied to its beams or samples); decoder-only families keep every row in one page pool, so theirs is in place
  (index names every row) and the copy is by page reference (unique_asr.cache: shared pages, the partial last
  page copied on write);
- `reorder(state, memory, index)`: row i continues row index[i] (beam search), in place.

A state provides `rows` (int), `save()` and `restore(saved)` (the lengths a warm-up step advances), so that
`CapturedDecodeStep` can run eager warm-up steps and capture one step of any family.

Two-phase step (optional; decoder-only families, whose step reserves pages on the host): the state provides
`plan_step() -> key`, the host half of the next one-token step of every row (page eviction and reservation,
positions), and the model `step_planned(tokens, state, memory)`, the device half on that plan (static shapes, no
host sync, idempotent for one plan); `step` is both halves. `CapturedDecodeStep` then calls `plan_step` before
every replay and keeps one graph per key (PagedRows: accumulator parity, page-table width).

The family's tokenizer and prompt come with the loaded model (`load_model` returns (model, tokenizer, info));
decoder-only families carry a `TranscriptionPrompt` (unique_asr.models.speech_family).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from unique_asr.config import SparsityConfig

KINDS = ("encoder-decoder", "decoder-only")


@runtime_checkable
class DecodeState(Protocol):
    """Per-row decode state of a family (e.g. `SelfAttentionCache`)."""

    @property
    def rows(self) -> int: ...

    def save(self) -> Any: ...

    def restore(self, saved: Any) -> None: ...


@runtime_checkable
class ModelFamily(Protocol):
    """A model as the decoding loop, the transcriber and the graph step see it (see the module docstring)."""

    family: str
    kind: str
    sparsity: SparsityConfig

    def with_sparsity(self, sparsity: SparsityConfig) -> ModelFamily: ...

    def memory(self, encoded: torch.Tensor) -> Any: ...

    def allocate_state(self, rows: int, capacity: int) -> DecodeState: ...

    def step(self, tokens: torch.Tensor, state: DecodeState, memory: Any) -> torch.Tensor: ...

    def expand(self, state: DecodeState, memory: Any, index: torch.Tensor) -> tuple[DecodeState, Any]: ...

    def reorder(self, state: DecodeState, memory: Any, index: torch.Tensor) -> None: ...
