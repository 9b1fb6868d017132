"""Audio decoding, resampling, stdin, streaming bounds, bad input, and log-mel parity with transformers."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import torch

from unique_asr import audio as audio_module
from unique_asr.audio import N_FRAMES, SAMPLE_RATE, AudioInfo, load, log_mel, probe, stream
from unique_asr.errors import AudioError, MissingToolError

# The test install brings ffmpeg as a pip package (imageio-ffmpeg, the [ffmpeg] extra): no system program needed.
FFMPEG = audio_module._ffmpeg()
assert FFMPEG is not None, "the [test] extra installs imageio-ffmpeg, which ships an ffmpeg binary"


def tone(rate: int, seconds: float, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    """float32 [n] (mono) or [n, channels]: one sine per channel, channel c at freq * (c + 1)."""
    t = np.arange(round(rate * seconds)) / rate
    x = np.stack([0.3 * np.sin(2 * np.pi * freq * (c + 1) * t) for c in range(channels)], axis=1)
    return (x[:, 0] if channels == 1 else x).astype(np.float32)


def assert_one_line_error(excinfo, path) -> None:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg.startswith(f"{path}: "), msg


@pytest.mark.parametrize("fmt,subtype,ext,atol", [
    ("WAV", "PCM_16", "wav", 1e-4), ("WAV", "FLOAT", "wav", 0.0), ("FLAC", "PCM_16", "flac", 1e-4),
    ("OGG", "VORBIS", "ogg", 0.05), ("MP3", "MPEG_LAYER_III", "mp3", 0.1),
])
def test_soundfile_formats_decode(tmp_path, fmt, subtype, ext, atol):
    x = tone(SAMPLE_RATE, 2.0)
    path = tmp_path / f"t.{ext}"
    sf.write(path, x, SAMPLE_RATE, format=fmt, subtype=subtype)
    y = load(path)
    assert y.dtype == np.float32 and y.ndim == 1
    if fmt in ("WAV", "FLAC"):
        assert len(y) == len(x) and np.abs(y - x).max() <= atol
    else:  # lossy codecs add encoder delay/padding; check length and spectral content
        assert abs(len(y) - len(x)) < 0.1 * SAMPLE_RATE
        spectrum = np.abs(np.fft.rfft(y[:SAMPLE_RATE]))
        assert abs(np.argmax(spectrum) - 440) <= 2
    info = probe(path)
    assert info.sample_rate == SAMPLE_RATE and info.channels == 1 and abs(info.duration_s - 2.0) < 0.1


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampling_and_stereo_downmix(tmp_path, rate):
    x = tone(rate, 1.5, freq=300.0, channels=2)  # 300 Hz left, 600 Hz right
    path = tmp_path / "s.flac"
    sf.write(path, x, rate, subtype="PCM_24")
    y = load(path)
    assert abs(len(y) - round(len(x) * SAMPLE_RATE / rate)) <= 1
    t = np.arange(len(y)) / SAMPLE_RATE
    want = 0.15 * (np.sin(2 * np.pi * 300 * t) + np.sin(2 * np.pi * 600 * t))
    inner = slice(400, len(y) - 400)  # resampler edges
    assert np.abs(y[inner] - want[inner]).max() < 2e-3
    assert probe(path) == AudioInfo(str(path), len(x) / rate, rate, 2, "FLAC/PCM_24")


def test_arrays_and_tensors():
    x = tone(44100, 1.0, channels=2)
    from_np = load(x, sample_rate=44100)
    from_torch = load(torch.from_numpy(x), sample_rate=44100)
    assert np.array_equal(from_np, from_torch) and abs(len(from_np) - SAMPLE_RATE) <= 1
    ints = (tone(SAMPLE_RATE, 0.5) * 32767).astype(np.int16)
    assert np.abs(load(ints) - ints / 32768.0).max() < 1e-6
    with pytest.raises(AudioError, match="shape"):
        load(np.zeros((2, 16000), np.float32))  # [channels, samples] is refused, not misread


def test_stream_blocks_are_exact_and_memory_is_bounded(tmp_path):
    x = tone(48000, 120.0, channels=2)  # 46 MB as float32: streaming must never hold it
    path = tmp_path / "long.flac"
    sf.write(path, x, 48000, subtype="PCM_16")
    del x
    tracemalloc.start()
    sizes = [len(b) for b in stream(path, block_s=1.0)]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert sizes[:-1] == [SAMPLE_RATE] * (len(sizes) - 1) and sum(sizes) == 120 * SAMPLE_RATE
    assert peak < 4 * 2**20, f"streaming 120 s held {peak / 2**20:.1f} MiB"


@pytest.mark.parametrize("rate", [16000, 44100])
def test_stream_resume_is_sample_exact(tmp_path, rate):
    path = tmp_path / "r.flac"
    sf.write(path, tone(rate, 3.0, freq=523.0), rate, subtype="PCM_24")
    full = load(path)
    start = 12345
    tail = np.concatenate(list(stream(path, block_s=0.5, start_sample=start)))
    assert len(tail) == len(full) - start
    assert np.abs(tail - full[start:]).max() < (1e-6 if rate == SAMPLE_RATE else 1e-4)
    assert list(stream(path, start_sample=len(full) + 10)) == []  # resuming at the end: nothing left


def test_ffmpeg_decodes_what_soundfile_cannot(tmp_path):
    x = tone(SAMPLE_RATE, 2.0)
    raw = tmp_path / "in.f32"
    x.tofile(raw)
    m4a = tmp_path / "t.m4a"
    subprocess.run([FFMPEG, "-v", "error", "-f", "f32le", "-ar", "16000", "-ac", "1", "-i", str(raw),
                    "-c:a", "aac", str(m4a)], check=True)
    y = load(m4a)
    assert abs(len(y) - len(x)) < 2048
    assert abs(np.argmax(np.abs(np.fft.rfft(y[:SAMPLE_RATE]))) - 440) <= 2
    info = probe(m4a)
    assert info.sample_rate == SAMPLE_RATE and "aac" in info.format and abs(info.duration_s - 2.0) < 0.1
    blocks = [len(b) for b in stream(m4a, block_s=0.25)]
    assert blocks[:-1] == [4000] * (len(blocks) - 1)


def test_ffmpeg_probe_without_ffprobe(tmp_path):
    """imageio-ffmpeg ships ffmpeg without ffprobe: `ffmpeg -i` describes the input instead."""
    m4a = tmp_path / "stereo.m4a"
    subprocess.run([FFMPEG, "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-ac", "2",
                    "-ar", "44100", "-c:a", "aac", str(m4a)], check=True)
    info = audio_module._ffmpeg_probe(FFMPEG, str(m4a))
    assert (info.sample_rate, info.channels) == (44100, 2) and abs(info.duration_s - 2.0) < 0.05
    assert "aac" in info.format
    notes = tmp_path / "notes.m4a"
    notes.write_text("not audio\n")
    with pytest.raises(AudioError, match="ffmpeg could not read it") as excinfo:
        audio_module._ffmpeg_probe(FFMPEG, str(notes))
    assert_one_line_error(excinfo, notes)


def test_missing_ffmpeg_is_named(tmp_path, monkeypatch):
    path = tmp_path / "clip.m4a"
    path.write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00" + bytes(range(256)) * 8)
    monkeypatch.setenv("UNIQUE_ASR_FFMPEG", "none")
    with pytest.raises(MissingToolError, match="ffmpeg") as excinfo:
        load(path)
    assert_one_line_error(excinfo, path)


def _run_stdin(data: bytes, with_ffmpeg: bool) -> str:
    code = "from unique_asr.audio import load; x = load('-'); print(len(x), float(abs(x).max()))"
    env = {**os.environ, "UNIQUE_ASR_FFMPEG": FFMPEG if with_ffmpeg else "none"}
    out = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    return out.stdout.decode().split()


@pytest.mark.parametrize("with_ffmpeg", [True, False])
def test_stdin_pipe(tmp_path, with_ffmpeg):
    path = tmp_path / "s.wav"
    sf.write(path, tone(22050, 1.0), 22050)
    n, peak = _run_stdin(path.read_bytes(), with_ffmpeg)
    assert abs(int(n) - SAMPLE_RATE) <= 2 and abs(float(peak) - 0.3) < 0.01


def _bad_wav_codec() -> bytes:
    """A RIFF/WAVE file whose fmt chunk names codec 0x7777, which no decoder knows."""
    data = bytes(1600)
    fmt = struct.pack("<HHIIHH", 0x7777, 1, 16000, 32000, 2, 16)
    return b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE" + \
        b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data


def _make_bad(tmp_path, case: str):
    x = tone(SAMPLE_RATE, 2.0)
    if case == "empty":
        (p := tmp_path / "empty.wav").write_bytes(b"")
    elif case == "zero_length":
        sf.write(p := tmp_path / "zero.wav", np.zeros(0, np.float32), SAMPLE_RATE)
    elif case.startswith("truncated_"):
        ext = case.split("_")[1]
        sf.write(full := tmp_path / f"full.{ext}", x, SAMPLE_RATE)
        (p := tmp_path / f"cut.{ext}").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    elif case == "corrupt":
        sf.write(full := tmp_path / "full.flac", x, SAMPLE_RATE)
        raw = bytearray(full.read_bytes())
        raw[200:] = np.random.default_rng(0).integers(0, 256, len(raw) - 200, dtype=np.uint8).tobytes()
        (p := tmp_path / "corrupt.flac").write_bytes(bytes(raw))
    elif case == "text":
        (p := tmp_path / "notes.wav").write_text("these are meeting notes, not audio\n" * 20)
    elif case == "nan":
        y = x.copy()
        y[1000] = np.nan
        sf.write(p := tmp_path / "nan.wav", y, SAMPLE_RATE, subtype="FLOAT")
    elif case == "codec":
        (p := tmp_path / "codec.wav").write_bytes(_bad_wav_codec())
    else:
        p = tmp_path / "missing.wav"
    return p


BAD_CASES = ["empty", "zero_length", "truncated_wav", "truncated_flac", "truncated_ogg", "truncated_mp3",
             "corrupt", "text", "nan", "codec", "missing"]


@pytest.mark.parametrize("with_ffmpeg", [True, False])
@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_raises_one_line_audio_error(tmp_path, monkeypatch, case, with_ffmpeg):
    path = _make_bad(tmp_path, case)
    monkeypatch.setenv("UNIQUE_ASR_FFMPEG", FFMPEG if with_ffmpeg else "none")
    with pytest.raises(AudioError) as excinfo:
        load(path)
    assert_one_line_error(excinfo, path)


def test_nan_in_array_is_rejected():
    x = tone(SAMPLE_RATE, 1.0)
    x[5] = np.inf
    with pytest.raises(AudioError, match="NaN or infinite"):
        load(x)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_log_mel_matches_transformers(n_mels):
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=n_mels)
    rng = np.random.default_rng()
    t = np.arange(7 * SAMPLE_RATE) / SAMPLE_RATE
    speechlike = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) +
                  0.02 * rng.standard_normal(len(t))).astype(np.float32)
    batch = [speechlike, (0.1 * rng.standard_normal(40 * SAMPLE_RATE)).astype(np.float32),
             np.zeros(SAMPLE_RATE, np.float32)]
    for x in batch:
        want = fe(x, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features
        got = log_mel(torch.from_numpy(x), n_mels=n_mels)
        assert got.shape == (1, n_mels, N_FRAMES) and got.dtype == torch.float32
        np.testing.assert_allclose(got.numpy(), want, atol=1e-5, rtol=0)
    padded = np.stack([np.pad(b[:480000], (0, max(0, 480000 - len(b)))) for b in batch])
    want = fe(list(padded), sampling_rate=SAMPLE_RATE, return_tensors="np").input_features
    got = log_mel(torch.from_numpy(padded), n_mels=n_mels)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5, rtol=0)
    unpadded = log_mel(torch.from_numpy(speechlike), n_mels, padding=False)
    assert unpadded.shape == (1, n_mels, len(speechlike) // 160)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_log_mel_on_cuda_matches_cpu():
    x = torch.randn(2, 10 * SAMPLE_RATE) * 0.1
    torch.testing.assert_close(log_mel(x.cuda()).cpu(), log_mel(x), atol=1e-4, rtol=0)
