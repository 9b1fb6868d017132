"""Speech spans from Silero VAD, streamed: bounded state, spans yielded as they close.

The model is the TorchScript file the `silero-vad` package ships (no onnxruntime, no torchaudio). Each
stream keeps its own explicit recurrent state (`VadState`), so one loaded `VadModel` serves any number of
files, one after another or interleaved.

Span rule (Silero's hysteresis, streamed): a span opens on the first frame with p >= threshold and closes
once p < threshold - 0.15 has lasted min_silence_ms; it is then padded by speech_pad_ms on both sides,
its start clamped to the previous span's end so spans never overlap. No span is dropped for being short.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .audio import SAMPLE_RATE, Source, stream
from .config import TranscribeOptions

FRAME = 512  # samples per VAD frame at 16 kHz (what the Silero model takes)
_CONTEXT = 64  # samples of the previous frame the model sees in front of each frame


@dataclass(frozen=True)
class SpeechSpan:
    """Detected speech [start_sample, end_sample) in 16 kHz samples from the start of the stream."""

    start_sample: int
    end_sample: int

    @property
    def samples(self) -> int:
        return self.end_sample - self.start_sample


@dataclass
class VadState:
    """Recurrent state of one stream: LSTM h and c float32 [1, 1, 128], last 64 samples seen [1, 64]."""

    h: torch.Tensor
    c: torch.Tensor
    context: torch.Tensor


class VadModel:
    """Silero VAD loaded once per process (about 2 MB); `probs` runs it over frames with explicit state.

    The network is the package's TorchScript model, run in two batched steps instead of one call per
    frame: the STFT + conv encoder for all frames of a block at once (each frame carries its 64-sample
    context), then its LSTM cell as a one-layer `nn.LSTM` over the frame sequence. The result equals the
    package's own per-frame loop (a test pins it, atol 1e-4) about 4x faster (0.08 vs 0.35 ms a frame here).

    device: where the STFT + conv front runs (default cpu). It is ~85 % of the CPU time (0.029 of 0.034 ms a
    frame measured on a 2-core machine) and parallel over frames, so on a GPU it leaves only the small
    recurrent part on the CPU; it runs in float32 without TF32, so the probabilities match the CPU ones.
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        threads = torch.get_num_threads()
        from silero_vad import load_silero_vad  # importing it sets torch's thread count to 1; undo that

        torch.set_num_threads(threads)
        self._jit = load_silero_vad(onnx=False)
        net = self._jit._model  # the 16 kHz network
        self.device = torch.device(device)
        self._front = torch.nn.Sequential(net.stft, net.encoder)  # [n, 64 + 512] -> [n, 128, 1]
        if self.device.type != "cpu":  # a copy: the package's model stays on the CPU
            self._front = copy.deepcopy(self._front).to(self.device)
        # a CUDA front runs on its own stream: it need not wait for the decoder's queued work
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._head = net.decoder.decoder  # [n, 128, 1] -> [n, 1, 1]
        cell = net.decoder.rnn
        self._lstm = torch.nn.LSTM(cell.hidden_size, cell.hidden_size)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(self._lstm, f"{name}_l0").copy_(getattr(cell, name))
        self._lstm.eval()

    def new_state(self) -> VadState:
        return VadState(torch.zeros(1, 1, 128), torch.zeros(1, 1, 128), torch.zeros(1, _CONTEXT))

    @torch.inference_mode()
    def probs(self, frames: np.ndarray, state: VadState) -> np.ndarray:
        """frames float32 [n, 512] (consecutive, 16 kHz) -> speech probability float32 [n]; updates state.

        Runs on one torch thread (restored afterwards): the ops are tiny, and intra-op threads made it
        15x slower on a busy 2-core machine (23x vs 344x real time measured). Do not call it while another
        Python thread runs torch work that needs the thread pool.
        """
        if not len(frames):
            return np.zeros(0, np.float32)
        with _one_thread():
            return self._probs(torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32)), state)

    def _probs(self, x: torch.Tensor, state: VadState) -> np.ndarray:
        context = torch.cat([state.context, x[:-1, -_CONTEXT:]])  # [n, 64]: the tail of each previous frame
        features = self._features(torch.cat([context, x], dim=1))  # [n, 128]
        hidden, (state.h, state.c) = self._lstm(features[:, None, :], (state.h, state.c))  # [n, 1, 128]
        state.context = x[-1:, -_CONTEXT:].clone()
        return self._head(hidden[:, 0, :, None]).reshape(-1).numpy()

    def _features(self, framed: torch.Tensor) -> torch.Tensor:
        """framed float32 [n, 64 + 512] (cpu) -> front features float32 [n, 128] (cpu)."""
        if self.device.type == "cpu":
            return self._front(framed).squeeze(-1)
        with torch.cuda.stream(self._stream), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            return self._front(framed.to(self.device)).squeeze(-1).cpu()


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def vad_frames(blocks: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Regroup audio blocks into (block, frames [n, 512]) pairs; a trailing partial frame is zero-padded
    and sent with the last block. Each block's audio is yielded once, with the frames it completes."""
    carry = np.zeros(0, np.float32)
    for block in blocks:
        joined = np.concatenate([carry, block])
        n = len(joined) // FRAME
        carry = joined[n * FRAME :]
        yield block, joined[: n * FRAME].reshape(n, FRAME)
    if len(carry):
        yield np.zeros(0, np.float32), np.pad(carry, (0, FRAME - len(carry)))[None]


class SpanTracker:
    """Streaming span detector over per-frame probabilities (bounded state).

    `push(p)` feeds the next frame and returns spans whose padded end the audio has now reached.
    `horizon` is the earliest sample where a not-yet-returned span can start; `end_bound` the earliest
    sample where it can end. `split(at)` closes the open span at `at` (for over-long speech).
    """

    def __init__(self, options: TranscribeOptions, history_frames: int):
        self.threshold = options.vad_threshold
        self.neg_threshold = max(options.vad_threshold - 0.15, 0.01)
        self.min_silence = options.min_silence_ms * SAMPLE_RATE // 1000
        self.pad = options.speech_pad_ms * SAMPLE_RATE // 1000
        self.frames = 0
        self.prev_end = 0
        self.open_start: int | None = None  # raw (unpadded) start of the open span
        self.temp_end: int | None = None  # where the current run of silence inside the open span began
        self.pending: collections.deque[SpeechSpan] = collections.deque()  # closed, end not reached yet
        self.history: collections.deque[float] = collections.deque(maxlen=history_frames)

    @property
    def now(self) -> int:
        return self.frames * FRAME

    def _padded_start(self, raw: int) -> int:
        return max(raw - self.pad, self.prev_end, 0)

    @property
    def horizon(self) -> int:
        if self.pending:
            return self.pending[0].start_sample
        return self._padded_start(self.open_start if self.open_start is not None else self.now)

    @property
    def end_bound(self) -> int:
        if self.pending:
            return self.pending[0].end_sample
        if self.open_start is not None:
            return (self.temp_end if self.temp_end is not None else self.now) + self.pad
        return self.horizon

    def _release(self, total: int | None = None) -> list[SpeechSpan]:
        """Pending spans the audio has reached the end of (all of them, clamped, once `total` is known)."""
        out = []
        while self.pending and (total is not None or self.pending[0].end_sample <= self.now):
            span = self.pending.popleft()
            out.append(span if total is None else SpeechSpan(span.start_sample, min(span.end_sample, total)))
        return out

    def push(self, p: float) -> list[SpeechSpan]:
        start = self.now
        self.frames += 1
        self.history.append(p)
        if self.open_start is None:
            if p >= self.threshold:
                self.open_start, self.temp_end = start, None
        elif p >= self.threshold:
            self.temp_end = None
        elif p < self.neg_threshold:
            self.temp_end = start if self.temp_end is None else self.temp_end
            if self.now - self.temp_end >= self.min_silence:
                span = SpeechSpan(self._padded_start(self.open_start), self.temp_end + self.pad)
                self.pending.append(span)
                self.prev_end, self.open_start, self.temp_end = span.end_sample, None, None
        return self._release()

    def split(self, at: int) -> SpeechSpan:
        """Close the open span at sample `at` (exclusive); the rest of it continues as a span from `at`."""
        span = SpeechSpan(self._padded_start(self.open_start), at)
        self.prev_end = at
        return span

    def quietest_cut(self, lo: int, hi: int) -> int:
        """Start sample of the lowest-probability frame starting in [lo, hi] (latest on ties); hi if none."""
        first = self.frames - len(self.history)
        best, cut = math.inf, hi
        for f in range(max(first, -(-lo // FRAME)), min(self.frames, hi // FRAME + 1)):
            if self.history[f - first] <= best:
                best, cut = self.history[f - first], f * FRAME
        return cut

    def finish(self, total: int) -> list[SpeechSpan]:
        """Spans still open or pending at the end of a stream of `total` samples (clamped to it)."""
        spans = self._release(total)
        if self.open_start is not None:
            end = self.temp_end + self.pad if self.temp_end is not None else total
            spans.append(SpeechSpan(self._padded_start(self.open_start), min(end, total)))
            self.open_start = None
        return spans


def iter_speech_spans(source: Source, options: TranscribeOptions, vad_model: VadModel,
                      block_s: float = 10.0) -> Iterator[SpeechSpan]:
    """Speech spans of `source` in order, yielded as they close; memory is bounded by block_s."""
    tracker, state, total = SpanTracker(options, history_frames=1), vad_model.new_state(), 0
    for block, frames in vad_frames(stream(source, block_s=block_s)):
        total += len(block)
        for p in vad_model.probs(frames, state):
            yield from tracker.push(float(p))
    yield from tracker.finish(total)
