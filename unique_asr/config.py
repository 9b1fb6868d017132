"""Frozen option dataclasses shared by the Python API, the CLI and the Hydra configs.

A test pins CLI flags, these fields and the conf/ keys together: add a field here, and the CLI flag and the
config key follow in the same change. Each field carries its description and its allowed values in its
metadata (`option(...)`): `validate` checks every value when an options object is built (API, CLI and Hydra
alike), and the CLI builds each flag's --help text and choices from the same metadata.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

from unique_asr.kernels.select_pages.registry import CODE_MAX, REFINABLE, STATS_DTYPES, scores_for
from unique_asr.languages import LANGUAGES, normalise_language

# "dense" plus every page score the decode selection kernel runs (kernels/select_pages/registry.py)
# and "window": sink + most recent pages, no scoring (kernels/select_pages: window_pages)
ATTENTION_MODES = ("dense", *scores_for("select"), "window")
CODED_STATS = tuple(CODE_MAX)  # stats_dtype values that keep one-byte key means (fp8, int8)
ATTENTION_BACKENDS = ("auto", "dense", "sparse-torch", "sparse-triton")
# What the softmax does with the held pages a selection leaves out (unique_asr/attention/paged.py):
# "drop" (the published method) renormalises over the selected pages; "estimate" keeps each as one term from
# its key and value means (measured in EVALUATION.md: short Whisper clips leave most of the 1500 frames padding)
UNSELECTED = ("drop", "estimate")
STRATEGIES = ("auto", "batched", "sequential", "streaming")
TASKS = ("transcribe", "translate")
DTYPES = ("auto", "float32", "float16", "bfloat16", "int8")
AUTO_LANGUAGE = "auto"  # DecodeOptions.language: detect the language of every window (unique_asr/window_language.py)
MAX_TEXT_TOKENS = 448  # Whisper's decoder context (n_text_ctx): no window can emit more tokens than this


def option(default=None, help: str = "", *, choices: Sequence[str] | None = None, low: float | None = None,
           high: float | None = None, low_open: bool = False, high_open: bool = False, flag: str | None = None,
           aliases: Sequence[str] = (), factory=None):
    """A dataclass field with its CLI description and its allowed values (checked by `validate`).

    low/high bound a number (or each number of a tuple), inclusive unless low_open/high_open; None values of
    optional fields are always allowed. flag: the CLI flag name when the field name reads badly there.
    aliases: other names of the same field (another tool's name for it), accepted as CLI flags and as
    keyword overrides (`with_overrides`); the field stays the one place the value lives.
    """
    metadata = {"help": help, "flag": flag, "choices": tuple(choices) if choices else None, "low": low, "high": high,
                "low_open": low_open, "high_open": high_open, "aliases": tuple(aliases)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _range_text(meta) -> str:
    low, high = meta["low"], meta["high"]
    if low is not None and high is not None:
        return f"in {'(' if meta['low_open'] else '['}{low:g}, {high:g}{')' if meta['high_open'] else ']'}"
    if low is not None:
        return f"{'>' if meta['low_open'] else '>='} {low:g}"
    return f"{'<' if meta['high_open'] else '<='} {high:g}"


def _in_range(value, meta) -> bool:
    low, high = meta["low"], meta["high"]
    if low is not None and (value <= low if meta["low_open"] else value < low):
        return False
    return high is None or (value < high if meta["high_open"] else value <= high)


def validate(options) -> None:
    """ValueError (one line, naming the field) for the first value outside its field's choices or range."""
    for f in fields(options):
        meta, value = f.metadata, getattr(options, f.name)
        if not meta or value is None:
            continue
        name = meta["flag"] or f.name
        if meta["choices"] and value not in meta["choices"]:
            raise ValueError(f"{name} {value!r} is not one of {', '.join(meta['choices'])}")
        if meta["low"] is None and meta["high"] is None:
            continue
        values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, float)) or not _in_range(v, meta)]
        if bad:
            shown = value if len(values) > 1 or isinstance(value, (tuple, list)) else bad[0]
            raise ValueError(f"{name} must be {_range_text(meta)}, got {shown}")


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps|xpu(:\d+)?)$")


def check_device(device: str) -> None:
    """A device name torch understands, and a CUDA device only where CUDA is available (torch imported only
    for cuda names, so building options stays light)."""
    if not _DEVICE.match(str(device)):
        raise ValueError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N")
    if str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available (use --device cpu or auto)")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist")


@dataclass(frozen=True)
class SparsityConfig:
    """How decoder attention reads its KV memory.

    mode: "dense" reads everything; "unique" scores pages with q·mu + lam·||q||·std; "mean" is lam = 0;
        "perdim" is q·mu + lam·sum_d |q_d|·sigma_d; "quest" uses per-page min/max bounds; "window" reads the
        first (sink) page and the most recent pages, no scoring (the sliding-window baseline).
    page_size: tokens (or encoder frames) per KV page, S.
    budget: tokens attended per query, T; k = budget // page_size pages.
    lam: weight of the spread term (0.5 in the published method).
    keep_first / keep_last: always select the first (sink) and last (partial) page. Off by default (the published
        method); on a decoder-only LM they fix what nothing forced loses (SmolLM2 2K-8K: UNIQUE perplexity at
        T = 128 from 2-8x dense to 1.04-1.24x; docs/selection_quality.md), so speech-LLMs should turn both on.
    dense_layers: the first L decoder layers stay dense.
    dense_when_fits: skip scoring when the cache holds no more than `budget` tokens.
    backend: "auto" picks sparse-triton on CUDA, sparse-torch elsewhere; forceable for tests.
    stats_dtype: storage of the page key means: "pool" (the K/V dtype), "fp8" (e4m3 codes) or "int8" (int8
        codes), each code with a per-(page, KV head) scale: about half the bytes page scoring reads. int8 has
        the uniform step and selects nearer the pool-dtype pages (98.4-99.8 % of the fp32 selection on real
        queries, e4m3 95-99.3 %: docs/selection_quality.md); speed: BENCHMARKS.md.
    refine: with one-byte means, select top_k + refine pages from the codes, then keep the best top_k of them by
        the key means in the KV dtype, kept beside the codes (statistic "rmean": 2D more bytes a page and head of
        memory, read only for the top_k + refine candidates). Near-ties at the top-k boundary are what the codes
        reorder: on SmolLM2 2K-8K, int8 selections hold 97.8-99.2 % of the bf16 selection's pages, 99.8-100 %
        with refine 4, at the bf16 WER on the dev long-form files (docs/selection_quality.md). 0: off. Only
        for modes that read key means (registry REFINABLE). With unselected="estimate" the unselected pages' terms
        read the KV-dtype means too.
    unselected: "drop" (the published method) renormalises the softmax over the selected pages; "estimate"
        adds one softmax term per unselected held page, its keys collapsed onto the page's key mean (weight
        n_p·exp(scale·q·mu_p), value the page's value mean): exact over the selected pages, an estimate of the
        mass the rest hold. Costs a value-mean statistic (D values in the KV dtype a page and head) and a pass
        over every held page's two means per query (one H100: 2.3x drop's attention time on Whisper cross-attention,
        52-380x on long speech-LLM rows, whose page walk is not split yet; BENCHMARKS.md). Default "drop": on short Whisper clips "estimate" is within
        0.1 WER points of dense on every set measured where "drop" is not, but it lost to "drop" on one (base,
        LibriSpeech clips; EVALUATION.md, "Unselected pages on short clips").
    """

    mode: str = option("dense", "decoder cross-attention: dense reads every encoder frame; the others read "
                       "the top-k pages by their page score", choices=ATTENTION_MODES, flag="attention")
    page_size: int = option(8, "encoder frames (or tokens) per KV page", low=1)
    budget: int = option(512, "frames read per query (top-k = budget // page_size pages)", low=1)
    lam: float = option(0.5, "weight of the spread term in the UNIQUE page score", low=0.0)
    keep_first: bool = option(False, "always select the first (sink) page (off: the published method; turn it and "
                              "keep_last on for speech-LLMs: docs/selection_quality.md)")
    keep_last: bool = option(False, "always select the last (partial) page")
    dense_layers: int = option(0, "the first N decoder layers stay dense", low=0)
    dense_when_fits: bool = option(False, "skip page scoring when the memory holds no more than budget frames")
    backend: str = option("auto", "sparse attention implementation (auto: Triton on CUDA, PyTorch elsewhere)",
                          choices=ATTENTION_BACKENDS)
    stats_dtype: str = option("pool", "page key means in the KV dtype (pool), or as one-byte codes with a "
                              "per-page scale (about half the bytes page scoring reads): fp8 (e4m3) or int8 "
                              "(a uniform step: closer to the pool-dtype selection)",
                              choices=STATS_DTYPES)
    refine: int = option(0, "with fp8 / int8 stats_dtype: select budget/page_size + refine pages from the codes, "
                         "keep the best by KV-dtype key means kept beside them (4 restores the KV-dtype selection "
                         "on near-ties; costs memory, not scoring bytes); 0: off", low=0)
    unselected: str = option("drop", "pages the selection leaves out: drop (the published method: softmax over "
                             "the selected pages only) or estimate (each stays in the softmax as one term from its "
                             "key and value means; costs a value-mean statistic and a read of every page's means)",
                             choices=UNSELECTED)

    def __post_init__(self) -> None:
        validate(self)
        if self.budget < self.page_size:
            raise ValueError(f"budget ({self.budget}) must be at least one page ({self.page_size} tokens)")
        if self.refining:
            if self.stats_dtype not in CODED_STATS:
                raise ValueError(f"refine re-ranks what one-byte means select: set stats_dtype to "
                                 f"{' or '.join(CODED_STATS)} (got {self.stats_dtype!r}), or refine 0")
            if self.mode not in REFINABLE:
                raise ValueError(f"refine re-ranks scores that read key means ({', '.join(REFINABLE)}), "
                                 f"not mode {self.mode!r}")

    @property
    def top_k(self) -> int:
        """Pages selected per (sequence, KV head)."""
        return self.budget // self.page_size

    @property
    def sparse(self) -> bool:
        return self.mode != "dense"

    @property
    def extra_statistics(self) -> tuple[str, ...]:
        """Page statistics the cache keeps beyond what the mode scores with (registry names)."""
        extra = ("vmean",) if self.sparse and self.unselected == "estimate" else ()
        return extra + (("rmean",) if self.refining else ())

    @property
    def refining(self) -> bool:
        """The selection from coded means is re-ranked by the KV-dtype means (refine > 0, a sparse mode)."""
        return self.sparse and self.refine > 0


@dataclass(frozen=True)
class DecodeOptions:
    """Token-loop options for one batch of windows (the usual Whisper decoding knobs)."""

    language: str | None = option(None, "spoken language: a code or English name ("
                                  + ", ".join(LANGUAGES) + "); none: detected once, on the first window (as "
                                  "Whisper does); auto: detected on every window (mixed-language recordings; "
                                  "see language_threshold)")
    language_threshold: float = option(0.5, "with --language auto: a window whose most likely language is less "
                                       "probable than this is decoded in the language of the window before it",
                                       low=0.0, high=1.0)
    task: str = option("transcribe", "transcribe, or translate into English (multilingual models only)",
                       choices=TASKS)
    beam_size: int = option(1, "beams per window (1: greedy)", low=1)
    best_of: int = option(5, "samples per window when the temperature is above 0", low=1)
    patience: float = option(1.0, "beam search collects round(beam_size * patience) finished beams", low=0.0,
                             low_open=True)
    length_penalty: float | None = option(None, "rank candidates by logprob / ((5 + length) / 6) ** value "
                                          "(none: logprob / length)", low=0.0)
    temperatures: tuple[float, ...] = option(None, "comma list of sampling temperatures tried in order when a "
                                             "window fails the thresholds", low=0.0,
                                             factory=lambda: (0.0, 0.2, 0.4, 0.6, 0.8, 1.0))
    compression_ratio_threshold: float | None = option(2.4, "retry at the next temperature above this gzip "
                                                       "compression ratio (none: never)", low=0.0, low_open=True)
    log_prob_threshold: float | None = option(-1.0, "retry at the next temperature below this mean token "
                                              "logprob (none: never)", high=0.0)
    no_speech_threshold: float | None = option(0.6, "skip a window whose no-speech probability is above this "
                                               "and whose logprob is below log_prob_threshold", low=0.0, high=1.0)
    condition_on_previous_text: bool = option(True, "prompt each window with the text decoded before it "
                                              "(sequential: all of it; batched with stripe_windows >= 1: its "
                                              "stripe's)")
    initial_prompt: str | None = option(None, "text that prompts the first window (names, spelling, style)")
    suppress_blank: bool = option(True, "never start a window with a blank")
    suppress_tokens: tuple[int, ...] = option(None, "comma list of token ids never emitted; -1: Whisper's "
                                              "non-speech symbols", low=-1, factory=lambda: (-1,))
    without_timestamps: bool = option(False, "decode text only, no timestamp tokens (segments span windows)")
    max_new_tokens: int = option(224, "most tokens decoded per window", low=1, high=MAX_TEXT_TOKENS)
    repetition_ngram: int = option(4, "repetition guard: n-gram length that counts as a loop", low=1)
    repetition_max: int = option(3, "repetition guard: stop a window after this many repeats of an n-gram",
                                 low=1)

    def __post_init__(self) -> None:
        if isinstance(self.language, str):
            key = self.language.strip().lower()
            if key != AUTO_LANGUAGE:
                object.__setattr__(self, "language", None if key in ("none", "") else normalise_language(key))
            else:
                object.__setattr__(self, "language", AUTO_LANGUAGE)
        for name in ("temperatures", "suppress_tokens"):  # a Hydra config or JSON gives lists: the tuples they mean
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        validate(self)
        if not self.temperatures:
            raise ValueError("temperatures must be a non-empty list of values >= 0")


@dataclass(frozen=True)
class TranscribeOptions:
    """Long-form orchestration: VAD, windowing, batching, and the nested decode/sparsity options.

    strategy: "auto" is the model family's own: "batched" for Whisper, "streaming" for speech-LLMs.
        "batched" decodes VAD-cut windows in batches (fast; Whisper), independently; with stripe_windows >= 1 a
        batch's rows are stripes of consecutive windows, each conditioned on its own stripe's text
        (unique_asr.stripes);
        "sequential" decodes windows in order, conditioned on previous text, with temperature fallback (Whisper);
        "streaming" puts every window's audio tokens and transcript into one sequence per recording, the whole
        recording in context (speech-LLMs; batch_size recordings decode together as rows of one paged cache).
    report_uncovered_s: detected speech stretches at least this long (s) that no emitted segment overlaps
        are listed in TranscriptionInfo.uncovered (and the JSON output) and counted in the summary line.
    prefetch: on CUDA, cut the next windows (audio decoding, VAD) in a background thread while the GPU
        decodes the current batch (at most one batch of windows ahead); False keeps everything on the
        calling thread.
    """

    strategy: str = option("auto", "auto: batched for Whisper, streaming for speech-LLMs; batched: windows "
                           "decoded independently in batches (fast; stripe_windows: with the previous text); "
                           "sequential: in order, conditioned on the "
                           "previous text, with temperature fallback; streaming: each recording one sequence, "
                           "all its windows in context (speech-LLMs)", choices=STRATEGIES)
    batch_size: int = option(16, "windows decoded together (batched strategy); recordings decoded together as "
                             "rows of one paged cache (streaming)", low=1)
    stripe_windows: int = option(0, "batched strategy: 0 decodes windows independently; N >= 1 conditions each "
                                 "window on the text before it (with condition_on_previous_text) in stripes of at "
                                 "least N consecutive windows, min(batch_size, windows / N) stripes decoding at "
                                 "once (1 with batch_size 1: sequential mode)", low=0)
    vad: bool = option(True, "find speech with Silero VAD and cut windows at silences (false: fixed 30 s cuts)")
    vad_threshold: float = option(0.5, "speech probability above which a VAD frame is speech", low=0.0,
                                  high=1.0, low_open=True, high_open=True)
    min_silence_ms: int = option(300, "silence that ends a speech span (ms)", low=0)
    speech_pad_ms: int = option(200, "audio kept on each side of a speech span (ms)", low=0)
    max_window_s: float = option(30.0, "longest window decoded at once (s)", low=0.0, high=30.0, low_open=True)
    report_uncovered_s: float = option(2.0, "detected speech stretches at least this long (s) without a segment "
                                       "are listed in the JSON output and counted in the summary line",
                                       low=0.0, low_open=True)
    prefetch: bool = option(True, "on CUDA, cut the next windows in a background thread while the GPU decodes")
    word_timestamps: bool = option(False, "time every word (cross-attention DTW over the alignment heads); words "
                                   "go to the JSON and to --highlight_words / line-limited subtitles")
    device: str = option("auto", "auto (cuda when available, else cpu), cpu, cuda or cuda:N")
    dtype: str = option("auto", "weight and activation type (auto: float16 on cuda, float32 on cpu; int8: "
                        "int8 Linear weights with dynamic int8 activations, CPU only); --compute_type is the "
                        "same option under faster-whisper's name", choices=DTYPES, aliases=("compute_type",))
    threads: int = option(0, "CPU threads torch uses (0: torch's default, one per core)", low=0)
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)

    def __post_init__(self) -> None:
        validate(self)
        check_device(self.device)
        if self.dtype == "int8" and self.device.startswith("cuda"):
            raise ValueError("dtype 'int8' runs on the CPU only (dynamic int8 Linear layers): use --device cpu")


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


@dataclass(frozen=True)
class SubtitleOptions:
    """How SRT/VTT cues are laid out from timed words (openai-whisper's subtitle options)."""

    max_line_width: int | None = option(None, "SRT/VTT: at most this many characters per line (needs word "
                                        "timestamps; none: one cue per segment)", low=1)
    max_line_count: int | None = option(None, "SRT/VTT: at most this many lines per cue (with max_line_width)",
                                        low=1)
    highlight_words: bool = option(False, "SRT/VTT: one cue per spoken word with that word underlined "
                                   "(needs word timestamps)")

    def __post_init__(self) -> None:
        validate(self)
        if self.max_line_count is not None and self.max_line_width is None:
            raise ValueError("max_line_count needs max_line_width")

    @property
    def needs_words(self) -> bool:
        return self.max_line_width is not None or self.highlight_words


def with_overrides(options, **overrides):
    """`dataclasses.replace` that also routes flat keys to the nested decode/sparsity options.

    >>> with_overrides(TranscribeOptions(), beam_size=5, budget=256).decode.beam_size
    5
    """
    nested = {f.name: f.type for f in fields(options) if f.name in ("decode", "sparsity")}
    top, parts = {}, {name: {} for name in nested}
    overrides = resolve_aliases(overrides)
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


def field_aliases() -> dict[str, str]:
    """Alias -> field name, over every option dataclass (`option(..., aliases=...)`), e.g. compute_type -> dtype."""
    table = {}
    for cls in (TranscribeOptions, DecodeOptions, SparsityConfig, SubtitleOptions):
        for f in fields(cls):
            table.update({alias: f.name for alias in f.metadata.get("aliases", ())})
    return table


def resolve_aliases(overrides: dict) -> dict:
    """Keyword overrides with every alias replaced by its field name; ValueError when both are given."""
    aliases = field_aliases()
    resolved = {}
    for key, value in overrides.items():
        name = aliases.get(key, key)
        if name in resolved or (name != key and name in overrides):
            raise ValueError(f"{key} and {name} name the same option: give one of them")
        resolved[name] = value
    return resolved
