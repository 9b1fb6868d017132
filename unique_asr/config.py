"""Frozen option dataclasses shared by the Python API, the CLI and the Hydra configs.

A test pins CLI flags, these fields and the conf/ keys together: add a field here, and the CLI flag and the
config key follow in the same change.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from unique_asr.kernels.select_pages.registry import scores_for

# "dense" plus every page score the decode selection kernel runs (kernels/select_pages/registry.py)
ATTENTION_MODES = ("dense", *scores_for("select"))
ATTENTION_BACKENDS = ("auto", "dense", "sparse-torch", "sparse-triton")


@dataclass(frozen=True)
class SparsityConfig:
    """How decoder attention reads its KV memory.

    mode: "dense" reads everything; "unique" scores pages with q·mu + lam·||q||·std; "mean" is lam = 0;
        "perdim" is q·mu + lam·sum_d |q_d|·sigma_d; "quest" uses per-page min/max bounds.
    page_size: tokens (or encoder frames) per KV page, S.
    budget: tokens attended per query, T; k = budget // page_size pages.
    lam: weight of the spread term (0.5 in the published method).
    keep_first / keep_last: always select the first (sink) and last (partial) page.
    dense_layers: the first L decoder layers stay dense.
    dense_when_fits: skip scoring when the cache holds no more than `budget` tokens.
    backend: "auto" picks sparse-triton on CUDA, sparse-torch elsewhere; forceable for tests.
    """

    mode: str = "dense"
    page_size: int = 8
    budget: int = 512
    lam: float = 0.5
    keep_first: bool = False
    keep_last: bool = False
    dense_layers: int = 0
    dense_when_fits: bool = False
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.mode not in ATTENTION_MODES:
            raise ValueError(f"attention mode {self.mode!r} is not one of {', '.join(ATTENTION_MODES)}")
        if self.backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention backend {self.backend!r} is not one of {', '.join(ATTENTION_BACKENDS)}")
        if self.page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {self.page_size}")
        if self.budget < self.page_size:
            raise ValueError(f"budget ({self.budget}) must be at least one page ({self.page_size} tokens)")
        if self.dense_layers < 0:
            raise ValueError(f"dense_layers must be >= 0, got {self.dense_layers}")

    @property
    def top_k(self) -> int:
        """Pages selected per (sequence, KV head)."""
        return self.budget // self.page_size

    @property
    def sparse(self) -> bool:
        return self.mode != "dense"


@dataclass(frozen=True)
class DecodeOptions:
    """Token-loop options for one batch of windows (the usual Whisper decoding knobs)."""

    language: str | None = None
    task: str = "transcribe"
    beam_size: int = 1
    best_of: int = 5
    patience: float = 1.0
    length_penalty: float | None = None
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float | None = 2.4
    log_prob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    condition_on_previous_text: bool = True
    initial_prompt: str | None = None
    suppress_blank: bool = True
    suppress_tokens: tuple[int, ...] = (-1,)
    without_timestamps: bool = False
    max_new_tokens: int = 224
    repetition_ngram: int = 4
    repetition_max: int = 3

    def __post_init__(self) -> None:
        if self.task not in ("transcribe", "translate"):
            raise ValueError(f"task must be 'transcribe' or 'translate', got {self.task!r}")
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        if not self.temperatures or any(t < 0 for t in self.temperatures):
            raise ValueError(f"temperatures must be a non-empty list of values >= 0, got {self.temperatures}")


@dataclass(frozen=True)
class TranscribeOptions:
    """Long-form orchestration: VAD, windowing, batching, and the nested decode/sparsity options.

    strategy: "batched" decodes VAD-cut windows independently in batches (fast);
        "sequential" decodes windows in order, conditioned on previous text, with temperature fallback.
    prefetch: on CUDA, cut the next windows (audio decoding, VAD) in a background thread while the GPU
        decodes the current batch (at most one batch of windows ahead); False keeps everything on the
        calling thread.
    """

    strategy: str = "batched"
    batch_size: int = 16
    vad: bool = True
    vad_threshold: float = 0.5
    min_silence_ms: int = 300
    speech_pad_ms: int = 200
    max_window_s: float = 30.0
    prefetch: bool = True
    device: str = "auto"
    dtype: str = "auto"
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)

    def __post_init__(self) -> None:
        if self.strategy not in ("batched", "sequential"):
            raise ValueError(f"strategy must be 'batched' or 'sequential', got {self.strategy!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 < self.max_window_s <= 30.0:
            raise ValueError(f"max_window_s must be in (0, 30], got {self.max_window_s}")


@dataclass(frozen=True)
class OutputOptions:
    """What a command-line run does about a file's journal of finished windows (output_dir/.<name>.journal.jsonl,
    left by an interrupted run); the Python API takes a `Journal` instead.

    resume: continue each file from its journal (its windows are replayed, not decoded again).
    overwrite: discard such a journal and transcribe the file from the start.
    With neither, a file that has a journal fails with a one-line message saying how to continue it, the
    journal is kept, and the other files go on.
    """

    resume: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.resume and self.overwrite:
            raise ValueError("--resume continues a journal and --overwrite discards it: give one of them")


def with_overrides(options, **overrides):
    """`dataclasses.replace` that also routes flat keys to the nested decode/sparsity options.

    >>> with_overrides(TranscribeOptions(), beam_size=5, budget=256).decode.beam_size
    5
    """
    nested = {f.name: f.type for f in fields(options) if f.name in ("decode", "sparsity")}
    top, parts = {}, {name: {} for name in nested}
    for key, value in overrides.items():
        owner = next((n for n in nested if key in {f.name for f in fields(getattr(options, n))}), None)
        if key in {f.name for f in fields(options)} or owner is None:
            top[key] = value
        else:
            parts[owner][key] = value
    for name, values in parts.items():
        if values:
            top[name] = replace(getattr(options, name), **values)
    return replace(options, **top)
