"""Whisper's mel filterbank (Slaney mel scale, Slaney area normalisation, 0-8 kHz over 201 FFT bins), in numpy.

The same construction as librosa's `filters.mel(htk=False, norm="slaney")` and transformers'
`audio_utils.mel_filter_bank(norm="slaney", mel_scale="slaney")` (tests compare them), built here so that
starting the command line does not import transformers (about 3 s on the 2-core CI machine) for a 64 KB table.
"""

from __future__ import annotations

from functools import cache

import numpy as np

_F_SP = 200.0 / 3  # Hz per mel below 1 kHz (linear part of the Slaney scale)
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0  # log-spaced above 1 kHz


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    log_part = hz >= _MIN_LOG_HZ
    return np.where(log_part, _MIN_LOG_MEL + np.log(np.maximum(hz, 1e-10) / _MIN_LOG_HZ) / _LOGSTEP, mel)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    log_part = mel >= _MIN_LOG_MEL
    return np.where(log_part, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL)), _F_SP * mel)


@cache
def mel_filters(n_mels: int, n_fft: int = 400, sample_rate: int = 16000, f_max: float = 8000.0) -> np.ndarray:
    """float64 [n_fft // 2 + 1, n_mels] triangular filters, each scaled to unit area (Slaney norm)."""
    fft_freqs = np.linspace(0, sample_rate // 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(f_max), n_mels + 2))
    width = np.diff(edges)
    slopes = edges[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / width[:-1]
    up = slopes[:, 2:] / width[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    filters *= (2.0 / (edges[2 : n_mels + 2] - edges[:n_mels]))[None, :]
    filters.setflags(write=False)
    return filters
