"""Word timestamps from cross-attention: openai-whisper's method (whisper/timing.py), on our model.

For one decoded window: teacher-force [sot sequence, <|notimestamps|>, text tokens, <|endoftext|>] through
the decoder over the window's encoder states, keep the attention probabilities of the alignment heads
(ModelInfo.alignment_heads), normalise each head per frame (z-score over tokens), median-filter along time
(width 7), average the heads, and find the monotonic token -> frame path by dynamic time warping. A word
starts at the frame where the path enters its first token and ends where it enters the next word's first
token. Word probability is the mean probability of its tokens under the same forward pass.

The alignment pass always reads the encoder frames densely (a CrossMemory), whatever attention the decode ran
with: the word times of a sparse decode are those of its text.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from unique_asr.attention import dense_attention
from unique_asr.audio import HOP_LENGTH, SAMPLE_RATE
from unique_asr.types import Word

FRAMES_PER_SECOND = SAMPLE_RATE / HOP_LENGTH / 2  # encoder frames: 50 per second (20 ms)
MEDFILT_WIDTH = 7
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"


class _RecordingMemory:
    """A dense cross-attention memory that also keeps the attention probabilities of chosen (layer, head)s."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, heads: Sequence[tuple[int, int]], frames: int):
        self.k, self.v, self.heads, self.frames = k, v, heads, frames  # k, v [L, 1, F, H, D]
        self.weights: dict[tuple[int, int], torch.Tensor] = {}

    @property
    def batch(self) -> int:
        return 1

    def attend(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        k = self.k[layer]
        for lay, head in self.heads:
            if lay == layer:
                logits = torch.einsum("btd,bfd->btf", q[:, :, head].float(), k[:, :, head].float())
                logits = logits * q.shape[-1] ** -0.5
                self.weights[(lay, head)] = logits[0, :, : self.frames].softmax(dim=-1)  # [T, frames]
        return dense_attention(q, k, self.v[layer])


def median_filter(x: torch.Tensor, width: int) -> torch.Tensor:
    """Median over the last axis in windows of `width` (odd), reflect-padded: x [..., N] -> [..., N]."""
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    shape = x.shape
    flat = x.reshape(-1, 1, shape[-1])  # [N, 1, len]: reflect padding works on 3-D input
    padded = torch.nn.functional.pad(flat, (pad, pad), mode="reflect")
    return padded.unfold(-1, width, 1).sort(dim=-1).values[..., pad].reshape(shape)


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Monotonic path through cost [N, M] (steps down, right, diagonal) of least total cost, as openai-whisper's
    dtw_cpu (ties: diagonal, then up, then left). Anti-diagonals are computed at once (numpy)."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    trace = np.full((n + 1, m + 1), -1, dtype=np.int8)
    acc[0, 0] = 0.0
    for s in range(2, n + m + 1):  # cells (i, j) with i + j == s, 1 <= i <= n, 1 <= j <= m
        i = np.arange(max(1, s - m), min(n, s - 1) + 1)
        j = s - i
        c0, c1, c2 = acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]
        best = np.where((c0 < c1) & (c0 < c2), 0, np.where((c1 < c0) & (c1 < c2), 1, 2))
        acc[i, j] = cost[i - 1, j - 1] + np.choose(best, [c0, c1, c2])
        trace[i, j] = best
    trace[0, :], trace[:, 0] = 2, 1
    i, j, path = n, m, []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        step = trace[i, j]
        if step == 0:
            i, j = i - 1, j - 1
        elif step == 1:
            i -= 1
        else:
            j -= 1
    path = np.array(path[::-1])
    return path[:, 0], path[:, 1]


def split_words(tokenizer, tokens: Sequence[int], language: str | None) -> tuple[list[str], list[list[int]]]:
    """Text tokens -> words and each word's tokens: a word starts at a token with a leading space or a
    punctuation token (languages without spaces: at every unicode-complete piece)."""
    pieces, piece_tokens, current = [], [], []
    for token in tokens:  # unicode-complete pieces first (a character may span tokens)
        current.append(token)
        text = tokenizer.decode(current)
        if "\ufffd" not in text:
            pieces.append(text)
            piece_tokens.append(current)
            current = []
    if current:
        pieces.append(tokenizer.decode(current))
        piece_tokens.append(current)
    if language in ("zh", "ja", "th", "lo", "my", "yue"):
        return pieces, piece_tokens
    words, word_tokens = [], []
    for text, toks in zip(pieces, piece_tokens):
        if not words or text.startswith(" ") or text.strip() in string.punctuation:
            words.append(text)
            word_tokens.append(list(toks))
        else:
            words[-1] += text
            word_tokens[-1].extend(toks)
    return words, word_tokens


@dataclass
class _Timed:
    word: str
    tokens: list[int]
    start: float
    end: float
    probability: float


def _merge_punctuations(words: list[_Timed]) -> list[_Timed]:
    """Opening punctuation joins the next word, closing punctuation the previous one (openai-whisper)."""
    out: list[_Timed] = []
    pending: _Timed | None = None
    for w in words:
        if pending is not None:
            w = _Timed(pending.word + w.word, pending.tokens + w.tokens, w.start, w.end, w.probability)
            pending = None
        if w.word.strip() and w.word.strip() in PREPEND_PUNCTUATIONS and w.word.startswith(" "):
            pending = w
            continue
        if out and w.word.strip() and all(ch in APPEND_PUNCTUATIONS for ch in w.word.strip()) \
                and not w.word.startswith(" "):
            last = out[-1]
            out[-1] = _Timed(last.word + w.word, last.tokens + w.tokens, last.start, last.end, last.probability)
            continue
        out.append(w)
    if pending is not None:
        out.append(pending)
    return out


@torch.inference_mode()
def align_words(model, tokenizer, encoder_out: torch.Tensor, text_tokens: Sequence[int], heads,
                language: str | None, task: str, audio_frames: int) -> list[_Timed]:
    """Words of text_tokens with times in seconds from the window start (encoder_out [1, F, d])."""
    from unique_asr.models.whisper import SelfAttentionCache

    text_tokens = [t for t in text_tokens if t < tokenizer.eot]
    if not text_tokens:
        return []
    prompt = tokenizer.sot_sequence(language if tokenizer.is_multilingual else None, task, timestamps=False)
    tokens = torch.tensor([prompt + text_tokens + [tokenizer.eot]], device=encoder_out.device)
    frames = max(1, min(encoder_out.shape[1], audio_frames))
    layers = range(len(model.decoder.blocks))
    k, v = (torch.stack(t) for t in zip(*(model._cross_kv(encoder_out, i) for i in layers)))
    memory = _RecordingMemory(k, v, heads, frames)
    cache = SelfAttentionCache.allocate(model.config, 1, tokens.shape[1], device=encoder_out.device,
                                        dtype=encoder_out.dtype)
    logits = model.decode(tokens, cache, memory)[0]  # [T, V]
    n_prompt = len(prompt) - 1  # rows from the last prompt token (<|notimestamps|>) predict the text
    probs = logits[n_prompt:-1].float().softmax(dim=-1)
    token_probs = probs[torch.arange(len(text_tokens)), torch.tensor(text_tokens)].cpu().numpy()

    weights = torch.stack([memory.weights[h] for h in heads])  # [heads, T, frames]
    std, mean = torch.std_mean(weights, dim=-2, keepdim=True, unbiased=False)
    weights = median_filter((weights - mean) / (std + 1e-10), MEDFILT_WIDTH)
    matrix = weights.mean(dim=0)[n_prompt:]  # rows: text tokens then <|endoftext|>
    text_index, time_index = dtw(-matrix.double().cpu().numpy())

    words, word_tokens = split_words(tokenizer, text_tokens + [tokenizer.eot], language)
    words, word_tokens = words[:-1], word_tokens[:-1]  # drop the <|endoftext|> "word"
    boundaries = np.pad(np.cumsum([len(t) for t in word_tokens]), (1, 0))
    jumps = np.pad(np.diff(text_index), (1, 0), constant_values=1).astype(bool)
    jump_times = time_index[jumps] / FRAMES_PER_SECOND
    starts, ends = jump_times[boundaries[:-1]], jump_times[boundaries[1:]]
    timed, at = [], 0
    for word, toks, start, end in zip(words, word_tokens, starts, ends):
        timed.append(_Timed(word, toks, float(start), float(end), float(token_probs[at: at + len(toks)].mean())))
        at += len(toks)
    return _merge_punctuations(timed)


def _constrain(words: list[_Timed]) -> None:
    """openai-whisper's duration rule: words longer than twice the median word (capped at 0.7 s) are cut to
    that at sentence ends, where the alignment is least reliable."""
    durations = np.array([w.end - w.start for w in words])
    durations = durations[durations.nonzero()]
    median = min(0.7, float(np.median(durations))) if len(durations) else 0.0
    longest = median * 2
    if not len(durations):
        return
    for i in range(1, len(words)):
        if words[i].end - words[i].start > longest:
            if words[i].word.strip() in ".。!！?？":
                words[i].end = words[i].start + longest
            elif words[i - 1].word.strip() in ".。!！?？":
                words[i].start = words[i].end - longest


def words_for_pieces(model, tokenizer, encoder_out: torch.Tensor, pieces, heads, language: str | None, task: str,
                     window_start_sample: int) -> list[tuple[Word, ...]]:
    """Word tuples for each piece (a Piece of unique_asr.transcribe: start/end samples and tokens) decoded
    together from one window whose first sample is window_start_sample; times in seconds of the file."""
    text = [t for p in pieces for t in p.tokens if t < tokenizer.eot]
    audio_frames = int(np.ceil((max(p.end_sample for p in pieces) - window_start_sample) / HOP_LENGTH / 2)) \
        if pieces else 0
    timed = align_words(model, tokenizer, encoder_out, text, heads, language, task, audio_frames)
    _constrain(timed)
    offset = window_start_sample / SAMPLE_RATE
    out: list[list[Word]] = [[] for _ in pieces]
    counts = [sum(1 for t in p.tokens if t < tokenizer.eot) for p in pieces]
    bounds = np.cumsum(counts)
    seen = 0
    for w in timed:
        index = int(np.searchsorted(bounds, seen, side="right")) if len(bounds) else 0
        index = min(index, len(pieces) - 1)
        piece = pieces[index]
        lo, hi = piece.start_sample / SAMPLE_RATE, piece.end_sample / SAMPLE_RATE
        start = min(max(offset + w.start, lo), hi)
        end = min(max(offset + w.end, start), hi)
        out[index].append(Word(round(start, 3), round(end, 3), w.word, round(w.probability, 4)))
        seen += len(w.tokens)
    return [tuple(words) for words in out]
