"""Python API: `model = unique_asr.load_model("base")`; `segments, info = model.transcribe("talk.wav")`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import numpy as np
import torch

from unique_asr.arrays import is_array, to_16k_mono
from unique_asr.config import SparsityConfig, TranscribeOptions, with_overrides
from unique_asr.journal import Journal
from unique_asr.malloc import reuse_freed_memory
from unique_asr.models import DEFAULT_MODEL, ModelInfo, families
from unique_asr.progress import Progress
from unique_asr.transcribe import ModelBundle, transcribe
from unique_asr.types import Segment, TranscriptionInfo
from unique_asr.vad import VadModel

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str | torch.device) -> torch.device:
    """Device "auto" -> cuda when available, else cpu; anything else must name a usable device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r} ({exc})") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available")
    return resolved


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """Dtype "auto" -> float16 on cuda, float32 elsewhere; else one of float32, float16, bfloat16."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype == "int8":
        if device.type != "cpu":
            raise ValueError("dtype 'int8' runs on the CPU only (dynamic int8 Linear layers): use --device cpu")
        return torch.float32  # the weights load in float32, then their Linear layers are quantized
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be auto or one of {', '.join(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


class Transcriber:
    """A loaded model (weights, tokenizer, VAD) that transcribes any number of inputs."""

    def __init__(self, bundle: ModelBundle, info: ModelInfo, device: torch.device, dtype: torch.dtype):
        self.bundle, self.info, self.device, self.dtype = bundle, info, device, dtype
        self._vad: VadModel | None = bundle.vad_model

    def speech_bundle(self, options: TranscribeOptions) -> ModelBundle:
        """The bundle a decoder-only (speech-LLM) model transcribes with under `options` (attention, VAD)."""
        if options.vad and self._vad is None:
            self._vad = VadModel(self.device)
        model = self.bundle.model
        if options.sparsity != self.bundle.sparsity:
            model = model.with_sparsity(options.sparsity)
        return ModelBundle(model, self.bundle.tokenizer, self.bundle.name, options.sparsity, self._vad)

    def transcribe(
        self,
        audio: str | os.PathLike | np.ndarray | torch.Tensor | list,
        options: TranscribeOptions | None = None,
        *,
        sample_rate: int | None = None,
        journal: Journal | None = None,
        progress: Callable[[Progress], None] | None = None,
        **overrides,
    ) -> tuple[Iterator[Segment], TranscriptionInfo]:
        """Transcribe a file path, "-" (stdin) or in-memory audio (numpy array, torch tensor or list).

        sample_rate: the rate of in-memory audio in Hz; with it any rate and channel layout ([samples],
        [samples, channels], [channels, samples]; float or int16/int32/uint8 samples) is resampled to 16 kHz
        mono. Without it an array must be 16 kHz mono (a multi-channel one is refused: AudioError).
        options: a TranscribeOptions (default: the defaults with the attention setting the model was loaded
        with); overrides: flat field names of TranscribeOptions, DecodeOptions or SparsityConfig (e.g.
        beam_size=5, strategy="sequential", mode="unique"). options.sparsity is the attention that runs.
        journal: resume state. progress: called with a `unique_asr.progress.Progress` (speech seconds decoded,
        detected, estimated total) after every finished window. Returns a lazy iterator of Segment and a
        TranscriptionInfo whose coverage fields fill in as it runs. Raises AudioError for unreadable or bad audio, ValueError for bad options.
        """
        try:
            options = with_overrides(options or TranscribeOptions(sparsity=self.bundle.sparsity), **overrides)
        except TypeError as exc:  # an unknown field name
            raise ValueError(f"unknown transcription option ({exc})") from None
        self.check_options(options)
        if options.threads:
            torch.set_num_threads(options.threads)  # process-wide, like faster-whisper's cpu_threads
        if is_array(audio):  # resampled and downmixed here, once: the stream below sees 16 kHz mono
            audio = to_16k_mono(audio, sample_rate)
        elif sample_rate is not None:
            raise ValueError("sample_rate is for in-memory arrays; a file or stream tells its own rate")
        if options.vad and self._vad is None:
            self._vad = VadModel(self.device)  # its conv front runs where the model does
        model = self.bundle.model
        if options.sparsity != self.bundle.sparsity:
            model = model.with_sparsity(options.sparsity)  # same weights, another attention setting
        bundle = ModelBundle(model, self.bundle.tokenizer, self.bundle.name, options.sparsity, self._vad,
                             getattr(self.info, "alignment_heads", ()))
        if model.kind == "decoder-only":
            from unique_asr.stream_transcribe import transcribe_stream

            return transcribe_stream(bundle, audio, options, journal=journal, progress=progress)
        return transcribe(bundle, audio, options, journal=journal, progress=progress)


    def check_options(self, options: TranscribeOptions) -> None:
        """ValueError (one line) for a decode option this model cannot honour; called before any work."""
        if self.bundle.model.kind == "decoder-only":
            from unique_asr.stream_transcribe import check_options

            check_options(options)
        check_decode_for_model(options.decode, self.bundle.tokenizer, self.info.name)
        if options.word_timestamps and not hasattr(self.bundle.model, "_cross_kv"):
            raise ValueError(f"word_timestamps align with Whisper's cross-attention heads; {self.info.name} has none")


def check_decode_for_model(decode, tokenizer, name: str) -> None:
    """Language and task against the model's tokenizer: English-only models transcribe English only."""
    if not getattr(tokenizer, "is_multilingual", True):
        if decode.task != "transcribe":
            raise ValueError(f"task {decode.task!r} needs a multilingual model; {name} is English-only")
        if decode.language not in (None, "en", "auto"):
            raise ValueError(f"language {decode.language!r}: {name} is an English-only model (use a multilingual "
                             "model such as base)")
        return
    codes = getattr(tokenizer, "language_codes", None)
    if decode.language not in (None, "auto") and codes is not None and decode.language not in codes:
        raise ValueError(f"language {decode.language!r} is not supported by {name}")


def load_model(
    name: str = DEFAULT_MODEL,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    sparsity: SparsityConfig | None = None,
    model_dir: str | None = None,
    compute_type: str | None = None,
) -> Transcriber:
    """Load a model of any registered family (Whisper, Voxtral, Qwen2-Audio, our speech-LLM format).

    name: "tiny.en" or "base" (offline, bundled), a Whisper name ("small", "large-v3", "turbo",
    "distil-large-v3", ...: downloaded once), a local Hugging Face folder (sharded weights too), or a hub id; the
    family (Whisper, Voxtral, Qwen2-Audio, ...) is read from its config.json (unique_asr.models.families).
    model_dir: where downloads and converted weights are kept (default: the huggingface_hub cache and
    ~/.cache/unique-asr).
    device: "auto" (cuda if available, else cpu) or a torch device; dtype: "auto" (float16 on cuda, float32
    on cpu), "float32", "float16", "bfloat16" or "int8" (CPU: int8 Linear layers); compute_type: the same
    option under faster-whisper's name (TranscribeOptions.dtype's alias). sparsity: the decoder's attention
    setting (default dense). Raises ModelError when the model cannot be found, verified or loaded.
    """
    if compute_type is not None:
        if str(dtype) != "auto":
            raise ValueError("compute_type and dtype name the same option: give one of them")
        dtype = compute_type
    sparsity = sparsity or SparsityConfig()
    resolved = resolve_device(device)
    if resolved.type == "cpu":
        reuse_freed_memory()  # process-wide glibc setting: large tensors reuse freed memory (unique_asr/malloc.py)
    torch_dtype = resolve_dtype(dtype, resolved)
    model, tokenizer, info = families.load(name, device=resolved, dtype=torch_dtype, model_dir=model_dir)
    if dtype == "int8":
        from unique_asr.models.quantize import quantize_int8

        quantize_int8(model)
    model = model.with_sparsity(sparsity)
    return Transcriber(ModelBundle(model, tokenizer, info.name, sparsity), info, resolved, torch_dtype)
