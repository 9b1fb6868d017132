"""Token loop for one batch of windows: greedy, beam search and temperature sampling, as in OpenAI Whisper.

One call decodes B windows (their encoder states) at one temperature. Rows are B windows x a group
(beam_size beams, best_of samples, or 1 for greedy); they finish independently at <|endoftext|> and keep
being fed eot, so every step has the same shapes (a preallocated self-attention cache, a [N, 1] token step).
Logit filters follow Whisper: suppress blank at the first sampled position, suppress_tokens (-1 = the
non-speech set), and the timestamp rules (pairs, monotonic, at most 1 s initial timestamp, force a timestamp
when the timestamp mass beats every text token). A repetition guard stops a row whose text ends in a looping
n-gram and marks the result so that the caller's temperature fallback retries it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from unique_asr.active_rows import ActiveRows
from unique_asr.config import DecodeOptions
from unique_asr.models.family import DecodeState, ModelFamily
from unique_asr.models.graph_step import CapturedDecodeStep

NEG_INF = float("-inf")
TIME_PRECISION = 0.02  # seconds per timestamp token
MAX_INITIAL_TIMESTAMP = 1.0  # seconds: the first timestamp may not start later than this


@dataclass(frozen=True)
class DecodeResult:
    """The chosen sequence of one window.

    tokens: sampled tokens (text and timestamps; no prompt, no eot). avg_logprob = sum_logprob / (len + 1).
    looped: the repetition guard stopped this sequence (the fallback should retry at a higher temperature).
    """

    tokens: tuple[int, ...]
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float
    language: str
    language_probability: float
    looped: bool = False

    def repeats(self, options: DecodeOptions) -> bool:
        """Stopped by the repetition guard, or text too compressible (Whisper's compression-ratio test)."""
        limit = options.compression_ratio_threshold
        return self.looped or (limit is not None and self.compression_ratio > limit)

    def needs_fallback(self, options: DecodeOptions) -> bool:
        """Whisper's quality test: repeating (see `repeats`) or too unlikely."""
        limit = options.log_prob_threshold
        return self.repeats(options) or (limit is not None and self.avg_logprob < limit)

    def is_silence(self, options: DecodeOptions) -> bool:
        """Whisper's no-speech rule: the no-speech token is likely and the text is not confidently decoded."""
        if options.no_speech_threshold is None or self.no_speech_prob <= options.no_speech_threshold:
            return False
        return options.log_prob_threshold is None or self.avg_logprob < options.log_prob_threshold

    def is_doubtful(self, options: DecodeOptions) -> bool:
        """The strict form of the rule, for passes we add beyond Whisper's (transcribe's skipped stretches):
        either test failing is enough (the no-speech token is likely, or the text is not confidently decoded)."""
        likely = options.no_speech_threshold is not None and self.no_speech_prob > options.no_speech_threshold
        unsure = options.log_prob_threshold is not None and self.avg_logprob < options.log_prob_threshold
        return likely or unsure


def compression_ratio(text: str) -> float:
    """len(utf-8 bytes) / len(zlib-compressed bytes): high for repetitive text."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def ends_in_loop(tokens: Sequence[int], min_ngram: int, max_repeats: int) -> bool:
    """True when `tokens` end with an n-gram (n >= min_ngram) repeated more than `max_repeats` times in a row.

    A loop of a shorter period p also repeats every multiple of p, so n >= min_ngram covers it too.
    """
    reps = max_repeats + 1
    last = len(tokens) - 1
    for n in range(max(1, min_ngram), len(tokens) // reps + 1):
        if tokens[last - n] != tokens[last]:
            continue
        tail = tokens[len(tokens) - n * reps :]
        block = tail[-n:]
        if all(tail[i * n : (i + 1) * n] == block for i in range(reps - 1)):
            return True
    return False


def suppressed_tokens(tokenizer, options: DecodeOptions) -> list[int]:
    """Ids never sampled: options.suppress_tokens (-1 means the non-speech set) plus the special tokens."""
    ids = {t for t in options.suppress_tokens if t >= 0}
    if -1 in options.suppress_tokens:
        ids.update(tokenizer.non_speech_tokens)
    ids.update(
        t
        for t in (
            tokenizer.transcribe,
            tokenizer.translate,
            tokenizer.sot,
            tokenizer.sot_prev,
            tokenizer.sot_lm,
            tokenizer.no_speech,
        )
        if t is not None
    )
    return sorted(ids)


class LogitFilter:
    """Whisper's logit filters for one decoding task, applied in place to logits [N, V] (float32)."""

    def __init__(self, tokenizer, options: DecodeOptions, vocab: int, device):
        self.eot, self.ts_begin, self.no_ts = (
            tokenizer.eot,
            tokenizer.timestamp_begin,
            tokenizer.no_timestamps,
        )
        self.timestamps = not options.without_timestamps
        self.max_initial = self.ts_begin + round(MAX_INITIAL_TIMESTAMP / TIME_PRECISION)
        self.always = torch.tensor(suppressed_tokens(tokenizer, options), dtype=torch.long, device=device)
        blank = tokenizer.encode(" ") + [tokenizer.eot] if options.suppress_blank else []
        self.blank = torch.tensor(blank, dtype=torch.long, device=device)
        self.vocab_ids = torch.arange(vocab, device=device)

    def __call__(self, sampled: torch.Tensor, logits: torch.Tensor) -> None:
        """sampled: int64 [N, t] tokens sampled so far (t may be 0); logits: [N, V], changed in place."""
        t = sampled.shape[1]
        if t == 0 and self.blank.numel():
            logits[:, self.blank] = NEG_INF
        if self.always.numel():
            logits[:, self.always] = NEG_INF
        if self.timestamps:
            self._timestamp_rules(sampled, logits)

    def _timestamp_rules(self, sampled: torch.Tensor, logits: torch.Tensor) -> None:
        # Each rule masks a column range of the rows it applies to (no [N, V] masks built: on the CPU the
        # vocabulary-wide compares and log_softmax were ~10 % of a base int8 step at 3 rows).
        tb = self.ts_begin
        logits[:, self.no_ts] = NEG_INF
        timestamps, text = logits[:, tb:], logits[:, :tb]
        if sampled.shape[1] == 0:
            text.fill_(NEG_INF)  # the first token is a timestamp, at most MAX_INITIAL_TIMESTAMP in
            logits[:, self.max_initial + 1 :] = NEG_INF
        else:
            is_ts = sampled >= tb
            last = is_ts[:, -1]
            penult = is_ts[:, -2] if sampled.shape[1] > 1 else torch.ones_like(last)
            timestamps.masked_fill_((last & penult)[:, None], NEG_INF)  # pair closed: text
            logits[:, : self.eot].masked_fill_((last & ~penult)[:, None], NEG_INF)  # close the pair
            # Monotonic, and a segment may not have zero length (that could loop forever).
            latest = torch.where(is_ts, sampled, torch.full_like(sampled, tb - 1)).amax(dim=1)
            bound = torch.where(last & ~penult, latest, latest + 1) - tb
            timestamps.masked_fill_(self.vocab_ids[: timestamps.shape[1]] < bound[:, None], NEG_INF)
        # The timestamp mass beats every text token: log-probabilities share the row's normaliser, so compare
        # logsumexp over the timestamps with the best text logit.
        timestamp_mass = timestamps.float().logsumexp(dim=-1)
        best_text = text.float().amax(dim=-1)
        text.masked_fill_((timestamp_mass > best_text)[:, None], NEG_INF)


@dataclass
class _Rows:
    """N rows = n_audio x group: token buffer int64 [N, L], filled length, float32 sums of logprobs [N]."""

    tokens: torch.Tensor
    length: int
    sum_logprobs: torch.Tensor
    text: list[list[int]]  # per row: sampled text tokens (no timestamps), for the repetition guard
    looped: list[bool]

    def sampled(self, sample_begin: int) -> torch.Tensor:
        return self.tokens[:, sample_begin : self.length]

    def append(self, next_tokens: torch.Tensor, text_below: int) -> list[int]:
        """Write next_tokens int64 [N] at the next position; tokens below text_below extend the text lists.
        Returns the tokens as a host list: the step's one copy to the host, reused by the repetition guard."""
        self.tokens[:, self.length] = next_tokens
        self.length += 1
        latest = next_tokens.tolist()
        for row, token in zip(self.text, latest):
            if token < text_below:
                row.append(token)
        return latest


class GreedySearch:
    """Argmax at temperature 0, else sampling from softmax(logits / T) with one generator per window."""

    def __init__(
        self, temperature: float, group: int, eot: int, generators: Sequence[torch.Generator] | None
    ):
        self.temperature, self.group, self.eot, self.generators = temperature, group, eot, generators

    def start(self, rows: _Rows) -> None:
        """Every row samples on its own; `stopped` mirrors rows.looped on the device (written only when the
        repetition guard stops a row), `latest` holds the last step's tokens on the host."""
        self.stopped = torch.tensor(rows.looped, device=rows.tokens.device)
        self.latest: list[int] = []

    def step(self, rows: _Rows, logits: torch.Tensor, reorder: Callable[[torch.Tensor], None]) -> list[int]:
        """Choose each row's next token (rows already at eot stay there), append it; returns the tokens."""
        logprobs = F.log_softmax(logits.float(), dim=-1)
        if self.temperature == 0:
            next_tokens = logits.argmax(dim=-1)
        else:
            probs = F.softmax(logits.float() / self.temperature, dim=-1)
            gens = self.generators or [None] * (probs.shape[0] // self.group)
            next_tokens = torch.cat(
                [torch.multinomial(p, 1, generator=gens[i // self.group]) for i, p in enumerate(probs)]
            )
        done = self._done(rows)
        chosen = logprobs.gather(1, next_tokens[:, None]).squeeze(1)
        rows.sum_logprobs += torch.where(done, torch.zeros_like(chosen), chosen)
        next_tokens = torch.where(done, torch.full_like(next_tokens, self.eot), next_tokens)
        self.latest = rows.append(next_tokens, self.eot)
        return self.latest

    def _done(self, rows: _Rows) -> torch.Tensor:
        """bool [N] on the device: rows that reached eot or were stopped by the repetition guard."""
        return (rows.tokens[:, rows.length - 1] == self.eot) | self.stopped

    def completed(self, rows: _Rows) -> bool:
        """Every row done, from the host copy of the last tokens (no device round trip)."""
        return all(token == self.eot or looped for token, looped in zip(self.latest, rows.looped))

    def done_windows(self, rows: _Rows) -> list[int]:
        """Windows whose every row (sample) is done, from the host copy of the last tokens."""
        done = [token == self.eot or looped for token, looped in zip(self.latest, rows.looped)]
        return [w for w in range(len(done) // self.group) if all(done[w * self.group : (w + 1) * self.group])]

    def stop_row(self, rows: _Rows, row: int) -> None:
        """Repetition guard: the row ends after its last token (eot from now on)."""
        rows.looped[row] = True
        self.stopped[row] = True

    def finalize(self, rows: _Rows, sample_begin: int) -> list[list[Candidate]]:
        """Per window, its group's candidates (sampled tokens up to eot, sum logprob, looped)."""
        out = []
        sampled = rows.sampled(sample_begin).tolist()
        scores = rows.sum_logprobs.tolist()
        for start in range(0, len(sampled), self.group):
            out.append(
                [
                    (_until_eot(sampled[r], self.eot), scores[r], rows.looped[r])
                    for r in range(start, start + self.group)
                ]
            )
        return out


class BeamSearch:
    """Whisper's beam search: beam_size beams per window, collecting round(beam * patience) candidates."""

    def __init__(self, beam_size: int, patience: float, eot: int, n_audio: int, sample_begin: int):
        self.beam, self.eot, self.sample_begin = beam_size, eot, sample_begin
        self.max_candidates = max(1, round(beam_size * patience))
        self.finished: list[dict[tuple[int, ...], tuple[float, bool]]] = [{} for _ in range(n_audio)]

    def start(self, rows: _Rows) -> None:
        """All beams of a window start identical: only beam 0 may expand at the first step."""
        rows.sum_logprobs.view(-1, self.beam)[:, 1:] = NEG_INF

    def step(self, rows: _Rows, logits: torch.Tensor, reorder: Callable[[torch.Tensor], None]) -> list[int]:
        """Expand every beam by its beam + 1 best tokens, keep the beam best unfinished per window."""
        n_rows, beam = logits.shape[0], self.beam
        n_audio = n_rows // beam
        logprobs = F.log_softmax(logits.float(), dim=-1)
        cand_lp, cand_tok = logprobs.topk(beam + 1, dim=-1)  # [N, beam + 1]
        scores = (rows.sum_logprobs[:, None] + cand_lp).view(n_audio, -1)
        tokens = cand_tok.view(n_audio, -1)
        source = torch.arange(n_rows, device=logits.device).repeat_interleave(beam + 1).view(n_audio, -1)
        scores, order = scores.sort(dim=-1, descending=True, stable=True)
        tokens, source = tokens.gather(1, order), source.gather(1, order)
        alive = tokens != self.eot
        seen_alive = alive.cumsum(dim=1)
        keep = alive & (seen_alive <= beam)
        done = ~alive & (seen_alive < beam) & (scores > NEG_INF)
        self._collect(rows, done, scores, source)
        keep_src = source[keep].view(n_rows)
        rows.tokens.copy_(rows.tokens.index_select(0, keep_src))
        rows.sum_logprobs.copy_(scores[keep])
        rows.text = [list(rows.text[i]) for i in keep_src.tolist()]
        rows.looped = [False] * n_rows
        reorder(keep_src)
        return rows.append(tokens[keep].view(n_rows), self.eot)

    def completed(self, rows: _Rows) -> bool:
        return all(len(f) >= self.max_candidates for f in self.finished)

    def done_windows(self, rows: _Rows) -> list[int]:
        """Windows that have collected all their candidates."""
        return [w for w, f in enumerate(self.finished) if len(f) >= self.max_candidates]

    def _collect(self, rows: _Rows, done, scores, source) -> None:
        for audio, row in done.nonzero().tolist():
            seq = tuple(rows.tokens[source[audio, row], self.sample_begin : rows.length].tolist())
            self._add(audio, seq, float(scores[audio, row]), False)

    def _add(self, audio: int, seq: tuple[int, ...], score: float, looped: bool) -> None:
        if len(self.finished[audio]) < self.max_candidates:
            self.finished[audio][seq] = (score, looped)

    def stop_row(self, rows: _Rows, row: int) -> None:
        """Repetition guard: the beam becomes a finished (looped) candidate and drops out of the search."""
        seq = tuple(rows.tokens[row, self.sample_begin : rows.length].tolist())
        self._add(row // self.beam, seq, float(rows.sum_logprobs[row]), True)
        rows.sum_logprobs[row] = NEG_INF

    def finalize(self, rows: _Rows, sample_begin: int) -> list[list[Candidate]]:
        """Finished candidates per window, topped up with the best unfinished beams when too few finished."""
        sampled = rows.sampled(sample_begin).tolist()
        scores = rows.sum_logprobs.tolist()
        out = []
        for audio, finished in enumerate(self.finished):
            rows_of_audio = sorted(
                range(audio * self.beam, (audio + 1) * self.beam), key=lambda r: -scores[r]
            )
            for r in rows_of_audio:
                if len(finished) >= self.beam or scores[r] == NEG_INF:
                    break
                finished.setdefault(tuple(_until_eot(sampled[r], self.eot)), (scores[r], False))
            out.append([(list(seq), score, looped) for seq, (score, looped) in finished.items()])
        return out


def _until_eot(tokens: list[int], eot: int) -> list[int]:
    return tokens[: tokens.index(eot)] if eot in tokens else tokens


def rank(candidates: list[Candidate], length_penalty: float | None) -> int:
    """Index of the best candidate: sum logprob / length (or / ((5 + length) / 6) ** length_penalty)."""

    def score(candidate):
        tokens, logprob, _ = candidate
        penalty = len(tokens) if length_penalty is None else ((5 + len(tokens)) / 6) ** length_penalty
        return logprob / max(penalty, 1e-9)

    return max(range(len(candidates)), key=lambda i: score(candidates[i]))


def _model_device_dtype(model) -> tuple[torch.device, torch.dtype]:
    weight = model.decoder.tok_emb.weight
    return weight.device, weight.dtype


@torch.inference_mode()
def detect_language(model, tokenizer, cross) -> tuple[list[str], list[float]]:
    """Most likely language per window from the logits after <|startoftranscript|>: (codes, probabilities).

    cross: the windows' memory from model.cross_memory (dense or paged)."""
    n = cross.batch
    device, _ = _model_device_dtype(model)
    state = model.allocate_state(n, 1)
    logits = model.step(torch.full((n, 1), tokenizer.sot, device=device), state, cross)[:, 0]
    codes = tokenizer.language_codes
    ids = torch.tensor(tokenizer.language_tokens, device=device)
    probs = logits[:, ids].float().softmax(dim=-1)
    best_p, best = probs.max(dim=-1)
    return [codes[i] for i in best.tolist()], best_p.tolist()


def initial_tokens(
    tokenizer, language: str | None, options: DecodeOptions, prompt: Sequence[int], max_prompt: int
) -> list[int]:
    """[<|startofprev|> last max_prompt prompt tokens] <|startoftranscript|> [lang task] [no timestamps]."""
    head = [tokenizer.sot_prev, *list(prompt)[-max_prompt:]] if prompt and max_prompt > 0 else []
    return head + tokenizer.sot_sequence(language, options.task, timestamps=not options.without_timestamps)


def group_size(options: DecodeOptions, temperature: float) -> int:
    """Rows per window: best_of samples when sampling, else beam_size beams (1 = greedy)."""
    return options.best_of if temperature > 0 else options.beam_size


Candidate = tuple[list[int], float, bool]  # sampled tokens (no eot), sum of logprobs, stopped by the guard
PREFILL_CHUNK = 16  # prompt tokens per prefill call: bounds the [B, chunk, V] logits a long prompt produces


def search_tokens(
    step: Callable[[torch.Tensor], torch.Tensor],
    reorder: Callable[[torch.Tensor], None],
    initial: torch.Tensor,
    first_logits: torch.Tensor,
    tokenizer,
    options: DecodeOptions,
    *,
    temperature: float,
    max_new: int,
    generators: Sequence[torch.Generator] | None = None,
    on_window_done: Callable[[int], None] | None = None,
    retire: Callable[[list[int]], None] | None = None,
) -> list[list[Candidate]]:
    """The token loop after the prompt: filters, greedy/beam/sampling choice, repetition guard.

    initial: int64 [B, L0] prompt tokens per window; first_logits: [B, V] logits after the prompt.
    step: int64 [N, 1] (one new token per row, N = B x group) -> logits [N, 1, V], extending the rows' caches;
    reorder: int64 [N] -> None, makes row i continue row index[i] (beam search). Returns per window its
    candidates (beam: finished beams; sampling: best_of samples; greedy: one).
    on_window_done: called once with a window's index as soon as its search is over (progress per window while
    the batch goes on; every window is reported by the time this returns).
    retire: called with the windows whose search is over whenever more are; `step` may then return anything
    for their rows (unique_asr.active_rows). Beam search retires only when a window's collected candidates
    cannot be topped up from its beams (patience >= 1).
    """
    n_audio, sample_begin = initial.shape
    group = group_size(options, temperature)
    beam = group if temperature == 0 else 1
    eot, device = tokenizer.eot, initial.device
    if beam > 1:
        search = BeamSearch(beam, options.patience, eot, n_audio, sample_begin)
    else:
        search = GreedySearch(temperature, group, eot, generators)
    n_rows = n_audio * group
    expand = torch.arange(n_audio, device=device).repeat_interleave(group)
    rows = _Rows(
        torch.full((n_rows, sample_begin + max_new), eot, device=device),
        sample_begin,
        torch.zeros(n_rows, device=device),
        [[] for _ in range(n_rows)],
        [False] * n_rows,
    )
    rows.tokens[:, :sample_begin] = initial.index_select(0, expand)
    search.start(rows)
    logit_filter = LogitFilter(tokenizer, options, first_logits.shape[-1], device)
    last = first_logits.float().index_select(0, expand)
    reported: set[int] = set()
    if beam > 1 and search.max_candidates < beam:
        retire = None
    retired = 0
    for i in range(max_new):
        logit_filter(rows.sampled(sample_begin), last)
        latest = search.step(rows, last, reorder)
        _guard_repetition(rows, search, latest, options, eot)
        done = search.done_windows(rows) if on_window_done is not None or retire is not None else []
        if on_window_done is not None:
            for window in done:
                if window not in reported:
                    reported.add(window)
                    on_window_done(window)
        if retire is not None and len(done) > retired:
            retire(done)
            retired = len(done)
        if search.completed(rows) or i == max_new - 1:
            break
        last = step(rows.tokens[:, rows.length - 1 : rows.length])[:, -1].float()
    for window in range(n_audio):
        if on_window_done is not None and window not in reported:
            on_window_done(window)  # cut by max_new
    return search.finalize(rows, sample_begin)


def _guard_repetition(rows: _Rows, search, latest: list[int], options: DecodeOptions, eot: int) -> None:
    """Stop rows whose text has just closed a loop (only rows that sampled a text token this step can);
    latest: the tokens this step appended, already on the host."""
    for row, token in enumerate(latest):
        if token < eot and ends_in_loop(rows.text[row], options.repetition_ngram, options.repetition_max):
            search.stop_row(rows, row)


def _step_function(
    model: ModelFamily, cache: DecodeState, cross, cuda_graph: bool
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The token loop's step, tokens int64 [N, 1] -> logits [N, 1, V]: on CUDA (cuda_graph) one CUDA graph of
    `model.step`, captured once per batch over the preallocated caches and replayed every token (one launch
    instead of one per kernel); elsewhere the eager call."""
    if cuda_graph and _model_device_dtype(model)[0].type == "cuda":
        return CapturedDecodeStep(model, cache, cross)
    return lambda tokens: model.step(tokens, cache, cross)


def _prefill(
    model: ModelFamily, tokens: torch.Tensor, cache: DecodeState, cross, at: Sequence[int], last: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Feed prompt tokens [B, L0] in chunks; returns logits [B, V] of row b at position at[b] and at last[b].

    Rows whose prompt is shorter than L0 are padded on the right: causal attention keeps the padding out of
    every position up to last[b], and the caller sets the row's cache length to last[b] + 1, so its next step
    overwrites the padding (ragged one-token steps mask each row by its own length)."""
    rows = torch.arange(tokens.shape[0], device=tokens.device)
    wanted = torch.tensor([list(at), list(last)], device=tokens.device)  # [2, B] positions, one copy a prefill
    picked = None  # [2, B, V]: logits at `at` and `last` of each row, from the chunk that holds the position
    for start in range(0, tokens.shape[1], PREFILL_CHUNK):
        logits = model.step(tokens[:, start : start + PREFILL_CHUNK], cache, cross)
        width = logits.shape[1]
        here = logits[rows, (wanted - start).clamp(0, width - 1)]
        inside = (wanted >= start) & (wanted < start + width)
        picked = here if picked is None else torch.where(inside[..., None], here, picked)
    return picked[0], picked[1]


@torch.inference_mode()
def decode_batch(
    model,
    tokenizer,
    features: torch.Tensor,
    options: DecodeOptions,
    *,
    temperature: float = 0.0,
    prompt: Sequence[int] = (),
    prompts: Sequence[Sequence[int]] | None = None,
    generators: Sequence[torch.Generator] | None = None,
    cuda_graph: bool = True,
    on_window_done: Callable[[int], None] | None = None,
    languages: Sequence[str | None] | None = None,
    pick_languages: Callable[[list[tuple[str, float]]], list[str]] | None = None,
) -> list[DecodeResult]:
    """Decode B windows at one temperature: features [B, F, d] (model.encode output) -> B results.

    prompt: previous text tokens shared by all rows (conditioning). prompts: one prompt per window instead
    (rows of different lengths: each row sits at its own positions, as if decoded alone; the token budget,
    n_text_ctx minus the longest row's prompt, is shared). generators: one per window for sampling
    (temperature > 0) so that a window's sample does not depend on the other windows in the batch.
    cuda_graph: on CUDA, replay the one-token step as a CUDA graph (False: eager, for comparison).
    on_window_done: called with a window's row index in `features` as soon as its tokens are chosen.
    languages: one language per window; a None entry (and no list: options.language None or "auto") is detected
    here, on this batch's own memory, on multilingual models ("en" otherwise). pick_languages: the rule that
    turns those rows' detections (most likely language, its probability; in row order) into the languages
    they are decoded in (language="auto": unique_asr/window_language.py); without it, the most likely one.
    The prompt is run once per window; its cache is then copied to the window's beams or samples.
    """
    device, _ = _model_device_dtype(model)
    n_audio = features.shape[0]
    cross = model.memory(features)
    if languages is None:
        languages = [options.language if options.language not in (None, "auto") else None] * n_audio
    languages, language_probs = list(languages), [1.0] * n_audio
    detect = [row for row, language in enumerate(languages) if language is None]
    if detect and tokenizer.is_multilingual:
        codes, probs = detect_language(model, tokenizer, cross)  # one step over the memory decoded below
        detected = [(codes[row], probs[row]) for row in detect]
        picked = pick_languages(detected) if pick_languages is not None else [code for code, _ in detected]
        for row, language, (_, probability) in zip(detect, picked, detected):
            languages[row], language_probs[row] = language, probability
    languages = [language or "en" for language in languages]
    max_prompt = model.config.n_text_ctx // 2 - 1
    row_prompts = prompts if prompts is not None else [prompt] * n_audio
    heads = [initial_tokens(tokenizer, lang, options, p, max_prompt) for lang, p in zip(languages, row_prompts)]
    lengths = [len(head) for head in heads]
    sample_begin = max(lengths)
    pad = sample_begin - min(lengths)
    # the model reads each row's tokens from position 0 (padding after them); the token loop's buffer holds
    # them right-aligned, so that every row's sampled tokens start at one column
    fed = torch.tensor([h + [tokenizer.eot] * (sample_begin - len(h)) for h in heads], device=device)
    initial = torch.tensor([[tokenizer.sot_prev] * (sample_begin - len(h)) + h for h in heads], device=device)
    max_new = max(1, min(options.max_new_tokens, model.config.n_text_ctx - sample_begin))
    cache = model.allocate_state(n_audio, sample_begin + max_new)
    at_sot, first = _prefill(
        model, fed, cache, cross, [h.index(tokenizer.sot) for h in heads], [n - 1 for n in lengths]
    )
    if pad:
        if model.kind != "encoder-decoder":
            raise ValueError("prompts of different lengths per row need an encoder-decoder model")
        cache.lengths.copy_(torch.tensor(lengths, device=device))
    no_speech = (
        at_sot.float().softmax(dim=-1)[:, tokenizer.no_speech].tolist()
        if tokenizer.no_speech is not None
        else [0.0] * n_audio
    )
    group = group_size(options, temperature)
    if group > 1:
        expand = torch.arange(n_audio, device=device).repeat_interleave(group)
        cache, cross = model.expand(cache, cross, expand)
    if device.type == "cpu" and model.kind == "encoder-decoder":  # eager: finished windows stop stepping
        active = ActiveRows(model, cache, cross, n_audio, group, device)
        step, reorder, retire = active.step, active.reorder, active.retire
    else:
        step, retire = _step_function(model, cache, cross, cuda_graph), None
        reorder = lambda index: model.reorder(cache, cross, index)
    candidates = search_tokens(
        step,
        reorder,
        initial,
        first,
        tokenizer,
        options,
        temperature=temperature,
        max_new=max_new,
        generators=generators,
        on_window_done=on_window_done,
        retire=retire,
    )
    results = []
    for audio, window_candidates in enumerate(candidates):
        tokens, sum_logprob, looped = window_candidates[rank(window_candidates, options.length_penalty)]
        text = tokenizer.decode(tokens)
        results.append(
            DecodeResult(
                tuple(tokens),
                text,
                sum_logprob / (len(tokens) + 1),
                no_speech[audio],
                compression_ratio(text),
                temperature,
                languages[audio],
                language_probs[audio],
                looped,
            )
        )
    return results
