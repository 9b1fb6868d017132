"""Audio in: any file, stdin or array -> float32 16 kHz mono blocks with bounded memory; Whisper's log-mel.

Decoding goes through soundfile (libsndfile: wav, flac, ogg, mp3, aiff, ...) and, for everything else, an
ffmpeg subprocess when ffmpeg is on PATH. Resampling is soxr's streaming resampler; channels are downmixed
by their mean before resampling. Memory is bounded by the block size, never by the file length.

Every failure on bad input is an `AudioError("<file>: <cause>")` (one line, names the file), or a
`MissingToolError` when a file needs ffmpeg and ffmpeg is not installed.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Union

import numpy as np
import soundfile as sf
import soxr
import torch

from .errors import AudioError, MissingToolError
from .mel import mel_filters

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_S = 30
N_SAMPLES = CHUNK_S * SAMPLE_RATE  # 480000 samples in a 30 s window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames in a 30 s window

Source = Union[str, os.PathLike, np.ndarray, torch.Tensor]

# Extensions libsndfile decodes itself: a failure on one of these is a broken file, not a missing tool.
_SOUNDFILE_EXTS = {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
                   ".au", ".snd", ".caf", ".w64", ".rf64"}
_MAX_CHANNELS = 64  # a 2-D array with more "channels" than this is almost surely transposed


@dataclass(frozen=True)
class AudioInfo:
    """What a source holds, before decoding. Fields a stream cannot know up front (stdin) are None."""

    path: str
    duration_s: float | None
    sample_rate: int | None
    channels: int | None
    format: str


# ----------------------------------------------------------------------------------------------- sources


def _name(source: Source) -> str:
    if isinstance(source, (np.ndarray, torch.Tensor)):
        return "<array>"
    return os.fspath(source)


def _as_array(source: np.ndarray | torch.Tensor) -> np.ndarray:
    """Array input -> float32 [frames, channels]; 2-D input is [frames, channels] (soundfile's layout)."""
    if isinstance(source, torch.Tensor):
        source = source.detach().cpu().numpy()
    x = np.asarray(source)
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max + 1)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] > _MAX_CHANNELS:
        raise AudioError(f"<array>: expected [samples] or [samples, channels], got shape {tuple(x.shape)}")
    return x.astype(np.float32, copy=False)


FFMPEG_ENV = "UNIQUE_ASR_FFMPEG"  # a path to an ffmpeg executable, or "none" to use no ffmpeg at all


def _ffmpeg() -> str | None:
    """The ffmpeg to decode with: $UNIQUE_ASR_FFMPEG, else `ffmpeg` on PATH, else the static build that the
    `imageio-ffmpeg` package ships (the `[ffmpeg]` extra), else None."""
    chosen = os.environ.get(FFMPEG_ENV)
    if chosen is not None:
        return None if chosen.strip().lower() in ("", "none") else chosen
    found = shutil.which("ffmpeg")
    if found is not None:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:  # the package is there but holds no binary for this platform
        return None


def _ffprobe_exe(ffmpeg: str) -> str | None:
    """ffprobe beside the chosen ffmpeg, else on PATH (imageio-ffmpeg ships ffmpeg alone: None then)."""
    beside = os.path.join(os.path.dirname(ffmpeg), "ffprobe")
    if os.path.dirname(ffmpeg) and os.access(beside, os.X_OK):
        return beside
    return shutil.which("ffprobe") if os.environ.get(FFMPEG_ENV) is None else None


def _looks_like_text(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(1024)
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _soundfile_cause(err: Exception) -> str:
    return getattr(err, "error_string", None) or str(err)


def _check_wav_header(f: sf.SoundFile, name: str) -> None:
    """libsndfile silently shortens a truncated WAV; its header report says 'data : N (should be M)'."""
    if f.format not in ("WAV", "WAVEX", "RF64", "W64"):
        return
    m = re.search(r"data : (\d+) \(should be (\d+)\)", f.extra_info)
    if m and int(m.group(1)) not in (0, 0xFFFFFFFF) and int(m.group(2)) < int(m.group(1)):
        raise AudioError(f"{name}: truncated file (header declares {m.group(1)} data bytes, "
                         f"{m.group(2)} present)")


def _open_soundfile(path: str | IO[bytes], name: str) -> tuple[sf.SoundFile | None, str]:
    """Open with libsndfile: (file, "") or (None, why) when it cannot (ffmpeg may: codecs it lacks)."""
    try:
        f = sf.SoundFile(path)
    except sf.LibsndfileError as err:
        return None, _soundfile_cause(err).strip()
    _check_wav_header(f, name)
    return f, ""


def _unreadable(path: str, why: str) -> Exception:
    """The error for a file soundfile cannot read when ffmpeg is not available."""
    if _looks_like_text(path):
        return AudioError(f"{path}: not an audio file (it holds text)")
    if os.path.splitext(path)[1].lower() in _SOUNDFILE_EXTS:
        return AudioError(f"{path}: {why} (libsndfile cannot decode it; ffmpeg, not installed, might)")
    return MissingToolError(f"{path}: soundfile cannot read it ({why}); install ffmpeg to decode this format (apt install ffmpeg, or pip install 'unique-asr[ffmpeg]')")


# ------------------------------------------------------------------------------------------- raw decoders


def _soundfile_blocks(f: sf.SoundFile, name: str, frames: int, start_frame: int) -> Iterator[np.ndarray]:
    """float32 [n, channels] blocks from an open SoundFile; flags truncation and decode errors."""
    declared = f.frames
    read = start_frame
    with f:
        if start_frame >= declared > 0:  # resuming at or past the end
            return
        try:
            if start_frame:
                f.seek(start_frame)
            while True:
                block = f.read(frames, dtype="float32", always_2d=True)
                if not len(block):
                    break
                read += len(block)
                yield block
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioError(f"{name}: corrupt or truncated ({_soundfile_cause(err)})") from None
    # MP3 frame counts are estimates; allow 1 % slack there, none elsewhere.
    slack = max(2048, declared // 100) if f.format == "MP3" else 0
    if 0 < declared and read < declared - slack:
        raise AudioError(f"{name}: truncated file (decoded {read} of {declared} frames)")


def _array_blocks(x: np.ndarray, frames: int, start_frame: int) -> Iterator[np.ndarray]:
    for i in range(start_frame, len(x), frames):
        yield x[i : i + frames]


def _ffmpeg_blocks(name: str, samples: int, stdin: IO[bytes] | None = None) -> Iterator[np.ndarray]:
    """float32 [n, 1] 16 kHz blocks from an ffmpeg pipe (ffmpeg resamples and downmixes)."""
    exe = _ffmpeg()
    if exe is None:
        raise MissingToolError(f"{name}: decoding this input needs ffmpeg, which is not installed (apt install ffmpeg, or pip install 'unique-asr[ffmpeg]')")
    src = "pipe:0" if stdin is not None else name
    cmd = [exe, "-nostdin", "-v", "error", "-i", src, "-vn",
           "-f", "f32le", "-ac", "1", "-ar", str(SAMPLE_RATE), "-"]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=stdin or subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        try:
            while True:
                data = proc.stdout.read(samples * 4)
                if not data:
                    break
                yield np.frombuffer(data[: len(data) // 4 * 4], dtype=np.float32)[:, None]
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        if code != 0:
            err.seek(0)
            lines = [ln.strip() for ln in err.read().decode("utf-8", "replace").splitlines() if ln.strip()]
            why = lines[-1].removeprefix(f"{src}: ") if lines else f"exit status {code}"
            raise AudioError(f"{name}: ffmpeg could not decode it ({why})")


# ------------------------------------------------------------------------------------- resample, rechunk


def _seek_point(start_sample: int, in_rate: int, margin: int) -> tuple[int, int]:
    """(input frame, output sample) pair that maps exactly, at or before start_sample - margin."""
    g = math.gcd(in_rate, SAMPLE_RATE)
    step_in, step_out = in_rate // g, SAMPLE_RATE // g
    k = max(0, start_sample - margin) // step_out
    return k * step_in, k * step_out


def _to_16k_mono(blocks: Iterable[np.ndarray], in_rate: int, name: str) -> Iterator[np.ndarray]:
    """[n, C] blocks at in_rate -> float32 mono 16 kHz arrays (variable length); rejects NaN/inf."""
    rs = None
    if in_rate != SAMPLE_RATE:
        rs = soxr.ResampleStream(in_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
    for block in blocks:
        mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
        if not np.isfinite(mono).all():
            raise AudioError(f"{name}: audio holds NaN or infinite samples")
        yield rs.resample_chunk(mono) if rs is not None else mono
    if rs is not None:
        yield rs.resample_chunk(np.zeros(0, np.float32), last=True)


def _rechunk(pieces: Iterable[np.ndarray], size: int, skip: int, name: str,
             empty_ok: bool) -> Iterator[np.ndarray]:
    """Exact `size`-sample blocks (the last may be shorter) after dropping `skip` leading samples;
    AudioError when the source decoded to nothing (unless resuming, where the tail may be empty)."""
    buf, have, total = [], 0, 0
    for piece in pieces:
        total += len(piece)
        if skip:
            cut = min(skip, len(piece))
            piece, skip = piece[cut:], skip - cut
        if not len(piece):
            continue
        buf.append(piece)
        have += len(piece)
        while have >= size:
            joined = np.concatenate(buf) if len(buf) > 1 else buf[0]
            yield np.ascontiguousarray(joined[:size], dtype=np.float32)
            rest = joined[size:]
            buf, have = ([rest] if len(rest) else []), len(rest)
    if have:
        yield np.ascontiguousarray(np.concatenate(buf), dtype=np.float32)
    if total == 0 and not empty_ok:
        raise AudioError(f"{name}: contains no audio samples")


# ------------------------------------------------------------------------------------------ public API


def _stdin_file() -> IO[bytes]:
    """stdin as a seekable binary file: itself when redirected from a file, else spooled to a temp file
    on disk in 1 MiB pieces (memory stays bounded; only used when ffmpeg cannot stream the pipe)."""
    raw = sys.stdin.buffer
    if raw.seekable():
        return raw
    tmp = tempfile.TemporaryFile()
    while chunk := raw.read(1 << 20):
        tmp.write(chunk)
    tmp.seek(0)
    return tmp


def _decode(source: Source, block: int, sample_rate: int | None,
            start_sample: int) -> tuple[Iterator[np.ndarray], int, int]:
    """(raw [n, C] block iterator, its sample rate, output samples still to skip) for any source."""
    name = _name(source)
    if isinstance(source, (np.ndarray, torch.Tensor)):
        x, rate = _as_array(source), sample_rate or SAMPLE_RATE
        frame, out = _seek_point(start_sample, rate, 0 if rate == SAMPLE_RATE else 1600)
        return _array_blocks(x, max(1, block * rate // SAMPLE_RATE), frame), rate, start_sample - out
    if name == "-":
        if _ffmpeg() is not None:
            return _ffmpeg_blocks(name, block, stdin=sys.stdin.buffer), SAMPLE_RATE, start_sample
        f, why = _open_soundfile(_stdin_file(), name)
        if f is None:
            raise MissingToolError(f"-: soundfile cannot read the audio on stdin ({why}); install ffmpeg")
        blocks = _soundfile_blocks(f, name, block * f.samplerate // SAMPLE_RATE + 1, 0)
        return blocks, f.samplerate, start_sample
    f = _open_path(name)
    if f is None:
        return _ffmpeg_blocks(name, block), SAMPLE_RATE, start_sample
    frame, out = _seek_point(start_sample, f.samplerate, 0 if f.samplerate == SAMPLE_RATE else 1600)
    blocks = _soundfile_blocks(f, name, block * f.samplerate // SAMPLE_RATE + 1, frame)
    return blocks, f.samplerate, start_sample - out


def stream(source: Source, block_s: float = 10.0, sample_rate: int | None = None,
           start_sample: int = 0) -> Iterator[np.ndarray]:
    """Decode `source` into float32 mono 16 kHz blocks of round(block_s * 16000) samples (the last shorter).

    source: a path (wav/flac/ogg/mp3/... via libsndfile, anything else via ffmpeg), "-" for stdin, or a numpy
        array / torch tensor shaped [samples] or [samples, channels] at `sample_rate` (default 16 kHz).
    start_sample: first 16 kHz sample to return (resume); files are seeked, not decoded from the start,
        at a point where input and output sample indices map exactly, so offsets stay sample-exact.
    Memory is O(block_s), independent of the file length. NaN/inf samples raise AudioError rather than
    being zeroed: they mean a broken decode or a bad array, and one NaN poisons a whole log-mel window.
    """
    if block_s <= 0 or start_sample < 0:
        raise ValueError(f"block_s must be > 0 and start_sample >= 0, got {block_s}, {start_sample}")
    size = max(1, round(block_s * SAMPLE_RATE))
    raw, rate, skip = _decode(source, size, sample_rate, start_sample)
    yield from _rechunk(_to_16k_mono(raw, rate, _name(source)), size, skip, _name(source), start_sample > 0)


def load(source: Source, sample_rate: int | None = None) -> np.ndarray:
    """The whole of `source` as one float32 mono 16 kHz array [samples] (use `stream` for long files)."""
    return np.concatenate(list(stream(source, block_s=60.0, sample_rate=sample_rate)))


# ffmpeg's own report of an input (what `ffmpeg -i FILE` prints): the probe when no ffprobe is installed.
_FFMPEG_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_FFMPEG_AUDIO = re.compile(r"Stream #\S+: Audio: (\w+).*?, (\d+) Hz, ([^,]+)")
_FFMPEG_INPUT = re.compile(r"Input #0, ([^ ]+?), from")
_LAYOUT_CHANNELS = {"mono": 1, "stereo": 2, "2.1": 3, "3.0": 3, "quad": 4, "4.0": 4, "5.0": 5, "5.1": 6,
                    "6.1": 7, "7.1": 8}


def _ffmpeg_probe(exe: str, path: str) -> AudioInfo:
    """Probe with `ffmpeg -i` (no output file: ffmpeg exits non-zero but prints the input's description)."""
    out = subprocess.run([exe, "-hide_banner", "-nostdin", "-i", path], capture_output=True, text=True)
    audio = _FFMPEG_AUDIO.search(out.stderr)
    if audio is None:
        lines = [ln.strip() for ln in out.stderr.splitlines() if ln.strip()]
        why = next((ln for ln in lines if "Invalid data" in ln or "rror" in ln), lines[-1] if lines else "")
        why = why.split(": ", 1)[-1] if "Error opening input file" not in why else "no audio stream"
        raise AudioError(f"{path}: ffmpeg could not read it ({why or 'no audio stream'})")
    codec, rate, layout = audio.group(1), int(audio.group(2)), audio.group(3).strip()
    m = re.match(r"(\d+) channels", layout)
    channels = int(m.group(1)) if m else _LAYOUT_CHANNELS.get(layout.split("(")[0], 2)
    d = _FFMPEG_DURATION.search(out.stderr)
    duration = int(d.group(1)) * 3600 + int(d.group(2)) * 60 + float(d.group(3)) if d else None
    fmt = _FFMPEG_INPUT.search(out.stderr)
    return AudioInfo(path, duration, rate, channels, f"{fmt.group(1) if fmt else '?'}/{codec}")


def _ffprobe(path: str) -> AudioInfo:
    ffmpeg = _ffmpeg()
    if ffmpeg is None:
        raise MissingToolError(f"{path}: probing this format needs ffmpeg, which is not installed")
    exe = _ffprobe_exe(ffmpeg)
    if exe is None:
        return _ffmpeg_probe(ffmpeg, path)
    out = subprocess.run([exe, "-v", "error", "-select_streams", "a:0", "-show_entries",
                          "stream=sample_rate,channels,codec_name:format=duration,format_name",
                          "-of", "default=noprint_wrappers=1", path], capture_output=True, text=True)
    fields = dict(ln.split("=", 1) for ln in out.stdout.splitlines() if "=" in ln)
    if out.returncode != 0 or "sample_rate" not in fields:
        why = (out.stderr.strip().splitlines() or ["no audio stream"])[-1]
        raise AudioError(f"{path}: ffprobe could not read it ({why})")
    duration = float(fields["duration"]) if fields.get("duration", "N/A") != "N/A" else None
    return AudioInfo(path, duration, int(fields["sample_rate"]), int(fields["channels"]),
                     f"{fields.get('format_name', '?')}/{fields.get('codec_name', '?')}")


def _open_path(name: str) -> sf.SoundFile | None:
    """An existing, non-empty file opened with soundfile; None when only ffmpeg can read it (and it is there).
    Raises AudioError (missing, empty, unreadable without ffmpeg)."""
    if not os.path.isfile(name):
        raise AudioError(f"{name}: no such file")
    if os.path.getsize(name) == 0:
        raise AudioError(f"{name}: empty file (0 bytes)")
    f, why = _open_soundfile(name, name)
    if f is None and _ffmpeg() is None:
        raise _unreadable(name, why)
    return f


def probe(source: Source, sample_rate: int | None = None) -> AudioInfo:
    """Duration, native rate, channels and format of `source`, without decoding (stdin: unknowns are None)."""
    name = _name(source)
    if isinstance(source, (np.ndarray, torch.Tensor)):
        x, rate = _as_array(source), sample_rate or SAMPLE_RATE
        return AudioInfo(name, len(x) / rate, rate, x.shape[1], "array")
    if name == "-":
        return AudioInfo(name, None, None, None, "stream")
    f = _open_path(name)
    if f is None:
        return _ffprobe(name)
    with f:
        return AudioInfo(name, f.frames / f.samplerate, f.samplerate, f.channels, f"{f.format}/{f.subtype}")


# -------------------------------------------------------------------------------------------- log-mel


class LogMel:
    """Whisper's log-mel front end on any device: Hann-window STFT (n_fft 400, hop 160), Slaney mel
    filters (unique_asr.mel, 0-8 kHz), log10 clamped at 1e-10, an 8-decade
    dynamic range below each example's max, then (x + 4) / 4. Holds the filters for reuse."""

    def __init__(self, n_mels: int = 80, device: str | torch.device = "cpu"):
        if n_mels not in (80, 128):
            raise ValueError(f"n_mels must be 80 or 128 (Whisper's front ends), got {n_mels}")
        filters = mel_filters(n_mels, N_FFT, SAMPLE_RATE)
        self.filters = torch.from_numpy(filters.copy()).to(device, torch.float32).T.contiguous()  # [n_mels, 201]
        self.window = torch.hann_window(N_FFT, device=device)

    def __call__(self, audio: torch.Tensor, padding: bool = True) -> torch.Tensor:
        """audio [B, N] or [N] float at 16 kHz -> float32 [B, n_mels, frames].

        padding=True zero-pads or trims to 30 s (N_FRAMES = 3000 frames, what Whisper's encoder expects);
        False keeps N // HOP_LENGTH frames.
        """
        x = torch.as_tensor(audio).to(self.window.device, torch.float32)
        x = x[None] if x.dim() == 1 else x
        if padding:
            x = torch.nn.functional.pad(x, (0, max(0, N_SAMPLES - x.shape[-1])))[:, :N_SAMPLES]
        stft = torch.stft(x, N_FFT, HOP_LENGTH, window=self.window, return_complex=True)
        power = (stft[..., :-1].abs() ** 2).contiguous()  # [B, 201, frames]
        log_spec = torch.clamp(self.filters @ power, min=1e-10).log10()
        peak = log_spec.amax(dim=(1, 2), keepdim=True)
        return (torch.maximum(log_spec, peak - 8.0) + 4.0) / 4.0


def log_mel(audio: torch.Tensor, n_mels: int = 80, padding: bool = True) -> torch.Tensor:
    """Whisper's log-mel of audio [B, N] or [N] (16 kHz) -> float32 [B, n_mels, 3000] (see LogMel)."""
    audio = torch.as_tensor(audio)
    return LogMel(n_mels, audio.device)(audio, padding)
