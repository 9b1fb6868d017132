"""In-memory audio -> float32 mono 16 kHz: numpy arrays of any numeric dtype, torch tensors, lists.

With `sample_rate`, any rate and channel layout is resampled (soxr, the quality the file path uses) and
downmixed (channel mean, as for files). Without it only 16 kHz mono is accepted: a rate cannot be told from
samples, and a 44.1 kHz array read as 16 kHz gives confident garbage (issue 18), so a multi-channel array
without a rate is refused rather than guessed at. Every refusal is a one-line AudioError (the samples) or
ValueError (the rate).
"""

from __future__ import annotations

import numbers

import numpy as np
import soxr
import torch

from unique_asr.audio import SAMPLE_RATE
from unique_asr.errors import AudioError

MAX_CHANNELS = 64  # the shorter axis of a 2-D array is its channels; more than this is not a channel axis


def is_array(audio) -> bool:
    """In-memory audio (as opposed to a path or "-")."""
    return isinstance(audio, (np.ndarray, torch.Tensor, list, tuple))


def to_16k_mono(audio, sample_rate: int | None = None) -> np.ndarray:
    """float32 [samples] at 16 kHz of `audio` shaped [samples], [samples, channels] or [channels, samples]
    (the channel axis is the shorter one, at most 64 long) at `sample_rate` Hz (None: 16 kHz mono only).
    Integer samples are scaled from their type's full range (int16 32767 -> ~1.0; uint8 is centred on 128);
    64-bit integers (what a list of Python ints becomes) are refused: their full scale is unknown."""
    rate = _rate(sample_rate)
    x = _samples(audio)
    if x.ndim == 2:
        if x.shape[1] <= MAX_CHANNELS and x.shape[0] > x.shape[1]:
            pass  # [samples, channels] (soundfile's layout)
        elif x.shape[0] <= MAX_CHANNELS and x.shape[1] > x.shape[0]:
            x = x.T  # [channels, samples] (torchaudio's layout)
        else:
            raise AudioError(f"<array>: cannot tell samples from channels in shape {tuple(x.shape)}; pass "
                             "[samples] or [samples, channels]")
        if x.shape[1] > 1 and sample_rate is None:
            raise AudioError(f"<array>: {x.shape[1]} channels and no sample_rate; pass sample_rate=<Hz> (an array "
                             "without one must be 16 kHz mono)")
        x = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]
    elif x.ndim != 1:
        raise AudioError(f"<array>: expected [samples] or [samples, channels], got shape {tuple(x.shape)}")
    if x.size == 0:
        raise AudioError("<array>: contains no audio samples")
    if not np.isfinite(x).all():
        raise AudioError("<array>: audio holds NaN or infinite samples")
    if rate != SAMPLE_RATE:
        x = soxr.resample(x, rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(x, dtype=np.float32)


def _rate(sample_rate) -> int:
    if sample_rate is None:
        return SAMPLE_RATE
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Real) or sample_rate != int(sample_rate) \
            or not 1000 <= sample_rate <= 1_000_000:
        raise ValueError(f"sample_rate must be a whole number of Hz between 1000 and 1000000, got {sample_rate!r}")
    return int(sample_rate)


def _samples(audio) -> np.ndarray:
    """Any supported container -> float32 ndarray (shape kept), integers scaled to [-1, 1)."""
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu()
        if audio.dtype in (torch.bfloat16, torch.float16):
            audio = audio.float()
        audio = audio.numpy()
    try:
        x = np.asarray(audio)
    except ValueError as exc:  # ragged nested lists
        raise AudioError(f"<array>: not an array of samples ({exc})") from None
    if x.dtype.kind in "iu" and x.dtype.itemsize > 4:
        raise AudioError(f"<array>: {x.dtype} samples have no known full scale (a list of Python ints becomes "
                         "int64); pass floats in [-1, 1] or an int16/int32 array")
    if x.dtype.kind == "i":
        return (x.astype(np.float64) / float(1 << (8 * x.dtype.itemsize - 1))).astype(np.float32)
    if x.dtype.kind == "u":
        half = float(1 << (8 * x.dtype.itemsize - 1))
        return ((x.astype(np.float64) - half) / half).astype(np.float32)
    if x.dtype.kind == "f":
        return x.astype(np.float32, copy=False)
    raise AudioError(f"<array>: expected numeric samples, got {x.dtype} values")
