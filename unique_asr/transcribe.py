"""Long-form orchestration: VAD-cut windows -> log-mel -> encoder -> token loop -> timestamped segments.

Two strategies (TranscribeOptions.strategy):
- "batched": options.batch_size windows decoded at a time (fast mode), independently (the only prompt is
  DecodeOptions.initial_prompt). With options.stripe_windows >= 1 and condition_on_previous_text, the windows
  are split into stripes of consecutive windows (unique_asr.stripes) that decode in lockstep, one row per
  stripe, each conditioned on its own stripe's text before it.
- "sequential": windows in order, each conditioned on the text of the windows before it (Whisper's
  condition_on_previous_text), reset after a high-temperature decode.
Both retry a window at the next temperature when its decode looks wrong (compression ratio, average
logprob, repetition guard), judge silence with the no-speech rule (an explicit, recorded decision), and
re-decode the rest of a window when the model stopped before its speech did (an unclosed last segment, a
guard or max_new_tokens cut, or a last timestamp well before the window's last VAD speech: Whisper's seek),
and decode again, on their own and without the previous text, the stretches of VAD speech that a pass's
timestamps passed over (before its first text or between two texts).
In batched mode that remainder joins the next batch of windows (with stripes: its stripe's next row);
windows still finish, and are journaled, in order. Coverage
counts the VAD speech that emitted segments overlap, and names each longer uncovered stretch with the
reason its decode gave (unique_asr.coverage). Segment times are sample indices (window start + 320 samples per timestamp token) divided by the
sample rate once, so they cannot drift over hours. Every finished window can be journaled for resume.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace

import torch

from unique_asr.audio import N_SAMPLES, SAMPLE_RATE, LogMel, probe
from unique_asr.config import AUTO_LANGUAGE, DecodeOptions, SparsityConfig, TranscribeOptions
from unique_asr.coverage import (
    EMPTY_TEXT,
    GUARD_STOP,
    NO_SPEECH,
    PASS_LIMIT,
    SKIPPED,
    Hole,
    intersect,
    length,
    speech_after,
    window_coverage,
)
from unique_asr.decoding import TIME_PRECISION, DecodeResult, decode_batch, detect_language
from unique_asr.journal import Journal, WindowRecord, account
from unique_asr.prefetch import PrefetchedWindows
from unique_asr.progress import Progress
from unique_asr.stripes import block_size, blocks, striped, stripes
from unique_asr.types import Segment, TranscriptionInfo
from unique_asr.vad import FRAME, VadModel
from unique_asr.window_language import choose_languages
from unique_asr.windows import Window, WindowIterator, iter_windows

SAMPLES_PER_TOKEN = round(TIME_PRECISION * SAMPLE_RATE)  # 320 samples per timestamp step
MIN_PASS_SAMPLES = SAMPLE_RATE // 2  # a remainder shorter than 0.5 s is not decoded again (its text is kept)
# A window whose text ends with at least this much VAD speech after its last timestamp is decoded again from
# there (Whisper's timestamps end within ~0.5 s of the words; VAD spans carry 0.2 s of padding on each side).
REDECODE_MIN_SPEECH_SAMPLES = SAMPLE_RATE
MAX_PASSES = 8  # decode passes per window at most (each starts after the text of the one before)
# A pass decoded with the previous text whose timestamps pass over at least SKIPPED_MIN_SPEECH_SAMPLES of VAD
# speech (before its first text, or between two texts) owes that stretch a pass of its own, without it: on the
# stress set (EVALUATION.md, issue 16) sequential mode's prompted decodes jumped over a new speaker's utterance.
# 2 s, not 1 s: with 1 s, stretches between a text's early end timestamp and the next text re-decoded words
# already written ("altogether," then "all together."). Passes without the previous text are not redone so: the
# model already saw that audio without a prompt, and alone it hallucinates over noise ("Thanks for watching."
# over an inserted noise stretch, base, stress seed 5). Such a pass's text is kept only if it passes both
# no-speech tests (`DecodeResult.is_doubtful`), not just one as Whisper's rule asks.
SKIPPED_MIN_SPEECH_SAMPLES = 2 * SAMPLE_RATE
RESET_PROMPT_TEMPERATURE = 0.5  # Whisper: a decode hotter than this does not condition the next window


@dataclass(frozen=True)
class ModelBundle:
    """What `transcribe` needs: the model, its tokenizer, a display name, the attention setting it runs with,
    and a VAD model (loaded once and shared by all files; None loads one when options.vad is on)."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    vad_model: VadModel | None = None
    alignment_heads: tuple[tuple[int, int], ...] = ()  # word timestamps; () -> upper half of the layers


@dataclass(frozen=True)
class Piece:
    """A decoded stretch of one window: [start_sample, end_sample) and its tokens (timestamps included)."""

    start_sample: int
    end_sample: int
    tokens: tuple[int, ...]
    words: tuple = ()  # Word timings (word_timestamps)


def split_tokens(
    tokens: Sequence[int], ts_begin: int, start: int, end: int
) -> tuple[list[Piece], Piece | None]:
    """Cut decoded tokens at timestamp tokens into pieces of [start, end) (16 kHz samples).

    Timestamp token ts_begin + i marks start + 320·i (clamped to end); a piece closes at the timestamp after
    its text. Returns (pieces, tail). tail is set when the output stopped before the audio did (text without a
    closing timestamp, or an opening timestamp and nothing after it, following at least one closed piece):
    a Piece from that opening timestamp to `end` holding what was decoded there, for Whisper's seek.
    Without any timestamp the text is one piece spanning [start, end).
    """

    def at(token: int) -> int:
        return min(end, start + (token - ts_begin) * SAMPLES_PER_TOKEN)

    pieces, current, opened = [], [], None
    for token in tokens:
        if token < ts_begin:
            current.append(token)
        elif any(t < ts_begin for t in current):
            first = at(opened) if opened is not None else start
            pieces.append(Piece(first, max(first, at(token)), tuple(current + [token])))
            current, opened = [], token
        else:
            current, opened = [token], token
    has_text = any(t < ts_begin for t in current)
    if opened is None:  # no timestamps at all
        return ([Piece(start, end, tuple(tokens))] if has_text else []), None
    if not pieces:  # text that never closed: one piece from its opening timestamp to the end of the audio
        return ([Piece(at(opened), end, tuple(current))] if has_text else []), None
    single_ending = tokens[-1] >= ts_begin and tokens[-2] < ts_begin
    return pieces, None if single_ending else Piece(at(opened), end, tuple(current))


_Pass = tuple["_Open", int, int]  # a decode pass owed: (window, start sample, stop sample)


def _span(window: Window) -> tuple[int, int]:
    return window.start_sample, window.end_sample


def _skipped(speech: Sequence[tuple[int, int]], start: int, texts: Sequence[Piece]) -> list[tuple[int, int]]:
    """The stretches [a, b) of a pass from `start` that its timestamps passed over: before its first text and
    between two texts, each holding at least SKIPPED_MIN_SPEECH_SAMPLES of VAD speech (`speech`)."""
    out, at = [], start
    for piece in texts:
        if length(intersect(speech, [(at, piece.start_sample)])) >= SKIPPED_MIN_SPEECH_SAMPLES:
            out.append((at, piece.start_sample))
        at = max(at, piece.end_sample)
    return out


class _Encoder:
    """Log-mel + encoder of a model, on the model's device and dtype."""

    def __init__(self, model: torch.nn.Module):
        weight = model.decoder.tok_emb.weight
        self.model, self.device, self.dtype = model, weight.device, weight.dtype
        self.mel = LogMel(model.config.n_mels, self.device)

    @torch.inference_mode()
    def __call__(self, audios: Sequence) -> torch.Tensor:
        """Encoder states [B, 1500, d] of float32 16 kHz audio pieces (each <= 30 s, zero-padded to 30 s)."""
        batch = torch.zeros(len(audios), N_SAMPLES)
        for i, audio in enumerate(audios):
            batch[i, : min(len(audio), N_SAMPLES)] = torch.as_tensor(audio[:N_SAMPLES])
        return self.model.encode(self.mel(batch.to(self.device)).to(self.dtype))


@dataclass
class _Open:
    """A window being decoded: the language it is decoded in, its (piece, result) pairs so far, the holes its
    passes left (coverage.Hole), passes run and pending, whether its first pass was judged silent,
    repetition-guard counts, and its prompt: the previous text it is decoded with, updated after each pass
    when conditioning (what the next window of its stripe, or of the recording, starts from)."""

    window: Window
    language: str | None = None  # chosen at its first pass (language="auto": per window)
    # striped runs with language="auto": the language of its stripe's window before it, which a weak detection
    # keeps (None for a stripe's first window: it keeps the language of the nearest window decided before it)
    follows: str | None = None
    pieces: list[tuple[Piece, DecodeResult]] = field(default_factory=list)
    holes: list[Hole] = field(default_factory=list)
    passes: int = 0
    pending: int = 1
    no_speech: bool = False
    guard_stops: int = 0
    loops: int = 0
    prompt: list[int] = field(default_factory=list)


class _Run:
    """One transcription in progress: windows in, segments out, journal and coverage updated per window."""

    def __init__(
        self,
        bundle: ModelBundle,
        options: TranscribeOptions,
        info: TranscriptionInfo,
        journal: Journal | None,
        decode: DecodeOptions,
        prompt: list[int],
        progress: Callable[[Progress], None] | None = None,
    ):
        self.bundle, self.options, self.info, self.journal = bundle, options, info, journal
        self.decode, self.prompt, self.progress = decode, prompt, progress
        self.tracker: _Resumed | None = None
        records = journal.records if journal is not None else []
        self.speech_base = sum(r.speech_s for r in records)
        self.finished_s = self.speech_base  # VAD speech of finished windows: the work done, for `progress`
        # Speech of windows whose first pass has chosen its tokens while the batch goes on (by window index):
        # the bar moves per decoded window, not per batch of 16 (issue 18); moved to finished_s at _finish.
        self.credited: dict[int, float] = {}
        self.next_id = sum(len(r.segments) for r in records)
        self.max_prompt = bundle.model.config.n_text_ctx // 2 - 1
        self.initial_prompt = (bundle.tokenizer.encode(" " + decode.initial_prompt.strip())
                               if decode.initial_prompt else [])
        # batched + stripe_windows + condition_on_previous_text: stripes (unique_asr.stripes); not the default:
        # no WER gain on the dev files and stress set for its cost (EVALUATION.md, issue 16)
        self.striped = striped(options.strategy, options.stripe_windows, decode.condition_on_previous_text)
        self.conditioned = options.strategy == "sequential" or self.striped
        self.encoder = _Encoder(bundle.model)
        self.min_report = round(options.report_uncovered_s * SAMPLE_RATE)
        # language="auto": every window's language is detected (unique_asr/window_language.py); a weak detection
        # keeps the language of the window before it (on resume: the journal's last decoded language)
        self.per_window = options.decode.language == AUTO_LANGUAGE and bundle.tokenizer.is_multilingual
        self.previous_language = next((s.language for r in reversed(records) for s in reversed(r.segments)
                                       if s.language), None)

    def segments(self, windows: Iterable[Window], tracker: _Resumed) -> Iterator[Segment]:
        """Replayed segments of journaled windows, then each new window's segments as it finishes.

        A decode batch holds the remainders still owed (first) and then new windows; a window finishes, in
        order, once none of its remainders is pending. tracker: the window iterator, whose running speech_s /
        duration_s feed info's coverage fields.
        """
        self.tracker = tracker
        self._report()
        for record in self.journal.records if self.journal is not None else ():
            yield from record.segments
        windows = iter(windows)
        size = self.options.batch_size if self.options.strategy == "batched" else 1
        opened: deque[_Open] = deque()
        owed: deque[_Pass] = deque()  # passes still owed: remainders and skipped stretches to decode again
        while not self.striped:
            jobs = [owed.popleft() for _ in range(min(size, len(owed)))]
            while len(jobs) < size and (window := next(windows, None)) is not None:
                opened.append(_Open(window, prompt=list(self.prompt)))
                jobs.append((opened[-1], window.start_sample, window.end_sample))
            self.info.speech_s = self.speech_base + tracker.speech_s
            if not jobs:
                break
            owed.extend(self._decode_jobs(jobs))
            while opened and not opened[0].pending:
                yield from self._finish(opened.popleft())
        if self.striped:
            yield from self._striped(windows)
        self.info.speech_s = self.speech_base + tracker.speech_s
        if not self.info.duration_s:
            self.info.duration_s = tracker.duration_s
        self._report(done=True)

    def _striped(self, windows: Iterator[Window]) -> Iterator[Segment]:
        """Batched mode with the previous text: per block of windows, its stripes decode in lockstep (one row
        per stripe: the stripe's current window, or the remainder it owes); windows finish in index order.
        self.prompt is the text before the first window to decode (the journal's last, or initial_prompt)."""
        carry = self.prompt
        size, least = self.options.batch_size, self.options.stripe_windows
        per_block = block_size(size, least)
        for block in blocks(windows, per_block):
            self.info.speech_s = self.speech_base + self.tracker.speech_s
            order = deque(_Open(window) for window in block)
            jobs = {job.window.index: job for job in order}
            cursors = []  # per stripe: [windows left, current job, its passes owed: (start, stop) samples]
            for stripe in stripes(block, per_block, size, least):
                job = jobs[stripe.windows[0].index]
                job.prompt = list(carry if stripe.continues else self.initial_prompt)
                cursors.append([deque(stripe.windows[1:]), job, deque([_span(job.window)])])
            while cursors:
                owed: dict[int, list[tuple[int, int]]] = {}
                rows = [(c[1], *c[2].popleft()) for c in cursors]
                for job, start, stop in self._decode_jobs(rows):
                    owed.setdefault(id(job), []).append((start, stop))
                for cursor in cursors:
                    windows_left, job, passes = cursor
                    passes.extend(owed.get(id(job), ()))
                    if job.pending:
                        continue  # the passes it owes come next, in order
                    if windows_left:
                        following = jobs[windows_left.popleft().index]
                        following.prompt, following.follows = job.prompt, job.language
                        cursor[1:] = [following, deque([_span(following.window)])]
                    else:
                        # the last stripe's last window: the next block's first continues it
                        carry, self.previous_language = job.prompt, job.language or self.previous_language
                        cursor[1] = None
                cursors = [c for c in cursors if c[1] is not None]
                while order and not order[0].pending:
                    yield from self._finish(order.popleft())

    def _report(self, done: bool = False) -> None:
        """Tell `progress` where the run stands (after every finished window, and at start and end)."""
        if self.progress is not None:
            tracker = self.tracker
            decoded = self.finished_s + sum(self.credited.values())
            self.progress(Progress(decoded, self.speech_base + tracker.speech_s, tracker.duration_s,
                                   self.info.duration_s or None, self.info.windows, done))

    def _finish(self, job: _Open) -> Iterator[Segment]:
        """A window's segments, coverage and journal record, once all its passes are done."""
        window = job.window
        pieces = sorted(job.pieces, key=lambda pr: pr[0].start_sample)  # a skipped stretch's pass decodes late
        segments = [s for s in (self._segment(p, r) for p, r in pieces) if s is not None]
        covered, gaps = window_coverage(
            window.speech,
            [(round(s.start * SAMPLE_RATE), round(s.end * SAMPLE_RATE)) for s in segments],
            job.holes,
            self.min_report,
            SAMPLE_RATE,
        )
        record = WindowRecord(
            window.index,
            window.start_sample,
            window.end_sample,
            window.speech_s,
            tuple(segments),
            tuple(job.prompt),
            job.no_speech,
            covered / SAMPLE_RATE,
            tuple(gaps),
            job.guard_stops,
            job.loops,
        )
        if self.journal is not None:
            self.journal.append(record)
        account(self.info, record)
        self.credited.pop(window.index, None)
        self.finished_s += window.speech_s
        self._report()
        yield from segments

    def _decode_jobs(self, jobs: list[_Pass]) -> list[_Pass]:
        """One decode pass over [start, stop) of each job; returns the passes it owes.

        A pass that stopped before the window's speech did (an unclosed last segment, text cut by
        max_new_tokens or the repetition guard, or a last timestamp REDECODE_MIN_SPEECH_SAMPLES or more of
        speech before the window's end) owes the rest: it is decoded again from there, like Whisper's seek. A
        pass decoded with the previous text whose timestamps passed over SKIPPED_MIN_SPEECH_SAMPLES or more of
        speech before its first text or between two texts owes each such stretch a pass of its own
        (`_skipped`), decoded without the previous text (only initial_prompt), whose text is kept only if it
        passes both no-speech tests (`DecodeResult.is_doubtful`). A pass judged silent, or with no text, ends
        its stretch; what it leaves undecoded is recorded as a hole. Passes over a skipped stretch owe nothing
        further.
        """
        audios = [job.window.audio[start - job.window.start_sample : stop - job.window.start_sample]
                  for job, start, stop in jobs]
        seeds = [job.window.index * 64 + job.passes for job, _, _ in jobs]
        features = self.encoder(audios)
        # A window's language is set at its first pass (remainders keep it): the recording's, or with
        # language="auto" (per_window) detected by that pass's decode on its own memory (None here).
        languages = [job.language or (None if self.per_window else self.decode.language) for job, _, _ in jobs]
        follows = [job.follows for job, _, _ in jobs if job.language is None]
        inner = [stop < job.window.end_sample for job, _, stop in jobs]  # passes over a skipped stretch
        prompts = [self.initial_prompt if hole else job.prompt[-self.max_prompt :] for (job, _, _), hole in zip(jobs, inner)]
        results, stops = self.decode_with_fallback(
            features, seeds, prompts,
            lambda row: self._credit(jobs[row][0]),
            languages=languages,
            pick_languages=(lambda detected: self._pick_languages(detected, follows)) if self.per_window else None,
        )
        owed = []
        for row, ((job, start, end), hole, result, guard_stops) in enumerate(zip(jobs, inner, results, stops)):
            window = job.window
            job.language = job.language or result.language
            job.guard_stops += guard_stops
            job.passes += 1
            job.pending -= 1
            if result.is_silence(self.decode) or (hole and result.is_doubtful(self.decode)):
                job.no_speech = job.no_speech or job.passes == 1
                job.holes.append(Hole(start, end, NO_SPEECH))
                continue
            job.loops += result.repeats(self.decode)
            found, tail = split_tokens(result.tokens, self.bundle.tokenizer.timestamp_begin, start, end)
            texts = [p for p in found if any(t < self.bundle.tokenizer.timestamp_begin for t in p.tokens)]
            resume = None
            if tail is not None and tail.end_sample - tail.start_sample >= MIN_PASS_SAMPLES and not hole:
                resume = tail.start_sample  # decode the rest again, from the open timestamp
            elif tail is not None:
                found.append(tail)  # too short to decode again (or a skipped stretch's): keep what the model said
            elif texts and not self.decode.without_timestamps and not hole:
                left, at = speech_after(window.speech, texts[-1].end_sample)
                if left >= REDECODE_MIN_SPEECH_SAMPLES:
                    resume = at  # the text ended well before the window's speech: decode what follows
            if self.options.word_timestamps and texts:
                found = self._with_words(found, features[row : row + 1], start, job.language)
            job.pieces += [(p, result) for p in found]
            if self.conditioned and not hole:
                job.prompt = self._condition(job.prompt, found, result)
                self.prompt = job.prompt  # sequential: the next window starts from it
            done_to = max([p.end_sample for p in found], default=start)
            why = GUARD_STOP if result.repeats(self.decode) else (EMPTY_TEXT if not texts else SKIPPED)
            # conditioned on the previous text: a prompt that is neither empty (reset) nor initial_prompt alone
            prompted = bool(prompts[row]) and prompts[row] != self.initial_prompt[-self.max_prompt :]
            skipped = _skipped(window.speech, start, texts) if prompted and not self.decode.without_timestamps else []
            for a, b in skipped[: max(0, MAX_PASSES - job.passes - job.pending)]:
                job.pending += 1
                owed.append((job, a, b))
            if resume is not None and job.passes + job.pending < MAX_PASSES:
                job.pending += 1  # the next pass accounts for [resume, end)
                owed.append((job, resume, end))
            else:
                job.holes.append(Hole(done_to, end, PASS_LIMIT if resume is not None else why))
        return owed

    def _credit(self, job: _Open) -> None:
        """A row of the batch has chosen its tokens: its window's speech counts as decoded for the bar."""
        if self.progress is not None and job.window.index not in self.credited:
            self.credited[job.window.index] = job.window.speech_s
            self._report()

    def _pick_languages(self, detected: list[tuple[str, float]], follows: list[str | None]) -> list[str]:
        """language="auto": the languages of a batch's new windows (in window order) from their detections; a
        weak detection keeps the language of the nearest window decided before it (unique_asr/window_language.py):
        the row before it, or, for a row whose stripe has decided the window before it (follows), that one's."""
        chosen = choose_languages(detected, self.previous_language, self.decode.language_threshold, follows)
        if chosen and not self.striped:  # striped: the block's last window updates it (_striped)
            self.previous_language = chosen[-1]
        return chosen

    def decode_with_fallback(
        self,
        features: torch.Tensor,
        seeds: Sequence[int],
        prompts: Sequence[Sequence[int]],
        on_row_done: Callable[[int], None] | None = None,
        languages: Sequence[str | None] | None = None,
        pick_languages: Callable[[list[tuple[str, float]]], list[str]] | None = None,
    ) -> tuple[list[DecodeResult], list[int]]:
        """Decode each row at the first temperature whose result passes (or is silence): Whisper's fallback.

        features [B, 1500, d]; seeds: one per row, so that sampling does not depend on the batch; prompts: one
        per row (the previous text it is conditioned on); languages:
        one per row (a None entry is detected by the first attempt, through pick_languages, and kept by the
        fallbacks; no list: the decode options' language). When every
        temperature fails, `best_attempt` picks one. Returns the results and, per row, how many of its
        attempts the repetition guard stopped. on_row_done: called with a row's index as soon as one of its
        attempts has chosen its tokens (progress).
        """
        opts, model, tokenizer = self.decode, self.bundle.model, self.bundle.tokenizer
        attempts: list[list[DecodeResult]] = [[] for _ in seeds]
        todo = list(range(len(seeds)))
        languages = list(languages) if languages is not None else None
        for step, temperature in enumerate(opts.temperatures):
            generators = None
            if temperature > 0:
                generators = [
                    torch.Generator(self.encoder.device).manual_seed(seeds[i] * 16 + step) for i in todo
                ]
            index = torch.tensor(todo, device=features.device)
            results = decode_batch(
                model,
                tokenizer,
                features.index_select(0, index),
                opts,
                temperature=temperature,
                prompts=[prompts[i] for i in todo],
                generators=generators,
                on_window_done=None if on_row_done is None else (lambda row, todo=todo: on_row_done(todo[row])),
                languages=[languages[i] for i in todo] if languages is not None else None,
                pick_languages=pick_languages if step == 0 else None,
            )
            for i, result in zip(todo, results):
                attempts[i].append(result)
                if languages is not None:
                    languages[i] = result.language  # fallbacks decode in the language the first attempt chose
            todo = [i for i, r in zip(todo, results) if r.needs_fallback(opts) and not r.is_silence(opts)]
            if not todo:
                break
        return [best_attempt(a, opts) for a in attempts], [sum(r.looped for r in a) for a in attempts]

    def _with_words(self, pieces: list[Piece], features: torch.Tensor, start: int, language: str) -> list[Piece]:
        """Pieces decoded together from one window (first sample `start`) with their words timed
        (cross-attention DTW over the alignment heads, unique_asr/alignment.py)."""
        from unique_asr.alignment import words_for_pieces
        from unique_asr.model_names import default_alignment_heads

        model, config = self.bundle.model, self.bundle.model.config
        heads = self.bundle.alignment_heads or default_alignment_heads(config.n_text_layer, config.n_text_head)
        words = words_for_pieces(model, self.bundle.tokenizer, features, pieces, heads, language,
                                 self.decode.task, start)
        return [replace(p, words=w) for p, w in zip(pieces, words)]

    def _condition(self, prompt: list[int], pieces: list[Piece], result: DecodeResult) -> list[int]:
        """The prompt after a pass that decoded these pieces with `prompt` (Whisper's reset rule)."""
        if not self.decode.condition_on_previous_text or result.temperature > RESET_PROMPT_TEMPERATURE:
            return []
        return (prompt + [t for p in pieces for t in p.tokens])[-self.max_prompt :]

    def _segment(self, piece: Piece, result: DecodeResult) -> Segment | None:
        text = self.bundle.tokenizer.decode(piece.tokens)
        if not text.strip():
            return None
        segment = Segment(
            self.next_id,
            piece.start_sample / SAMPLE_RATE,
            piece.end_sample / SAMPLE_RATE,
            text,
            piece.tokens,
            result.avg_logprob,
            result.compression_ratio,
            result.no_speech_prob,
            result.temperature,
            words=piece.words,
            language=result.language,
        )
        self.next_id += 1
        return segment


def best_attempt(attempts: list[DecodeResult], options: DecodeOptions) -> DecodeResult:
    """The last attempt that passed (or was silence); if none did, the best one: not repeating, then the
    highest average logprob (Whisper would keep the last, hottest one)."""
    passing = [r for r in attempts if not r.needs_fallback(options) or r.is_silence(options)]
    if passing:
        return passing[-1]
    return max(attempts, key=lambda r: (not r.repeats(options), r.avg_logprob))


def transcribe(
    bundle: ModelBundle,
    source,
    options: TranscribeOptions | None = None,
    *,
    journal: Journal | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> tuple[Iterator[Segment], TranscriptionInfo]:
    """Transcribe `source` (path, "-", or float32 16 kHz array) -> (lazy segment iterator, info).

    Segments stream as windows finish; info.speech_s (VAD speech so far) and info.decoded_s (VAD speech in
    finished windows) grow while the iterator runs. journal: each finished window is appended to it; windows
    it already holds are replayed first and decoding continues after the last of them (resume).
    progress: called with a `Progress` when iteration starts, after every finished window and at the end.
    Raises AudioError / MissingToolError for unreadable input (here, or while iterating).
    """
    options = options or TranscribeOptions()
    if options.strategy == "streaming":
        raise ValueError("strategy 'streaming' is for speech-LLMs; Whisper uses 'batched' or 'sequential'")
    if options.strategy == "auto":
        options = replace(options, strategy="batched")  # Whisper's own
    duration = probe(source).duration_s
    records = journal.records if journal is not None else []
    device = next(bundle.model.parameters()).device
    vad = (bundle.vad_model or VadModel(device)) if options.vad else None
    resume_at = records[-1].end_sample if records else 0
    # The VAD restarts on the uninterrupted run's 512-sample frame grid at the last finished window's start,
    # so its state is warm again by the resume point and the windows after it match the uninterrupted run's.
    restart = records[-1].start_sample - records[-1].start_sample % FRAME if records else 0
    windows = _Resumed(
        iter_windows(source, options, vad, restart),
        resume_at,
        restart,
        records[-1].index + 1 if records else 0,
    )
    if options.prefetch and device.type == "cuda":
        # audio decoding and VAD (CPU) overlap the decoding (GPU); a batch of windows waits in between
        windows = PrefetchedWindows(windows, options.batch_size if options.strategy == "batched" else 2)
    stream: Iterator[Window] = iter(windows)
    decode = options.decode
    if journal is not None and journal.header is not None:
        language, probability = journal.header["language"], journal.header["language_probability"]
    elif decode.language in (None, AUTO_LANGUAGE) and bundle.tokenizer.is_multilingual:
        first = next(stream, None)
        stream = itertools.chain([first] if first is not None else [], stream)
        language, probability = _detect(bundle, first) if first is not None else ("en", 0.0)
    else:
        language, probability = decode.language if decode.language not in (None, AUTO_LANGUAGE) else "en", 1.0
    info = TranscriptionInfo(
        language,
        probability,
        duration or 0.0,
        bundle.name,
        asdict(options),
        attention=asdict(bundle.sparsity),
    )
    for record in records:
        account(info, record)
    info.speech_s = sum(r.speech_s for r in records)
    if records:
        prompt = list(records[-1].prompt)
    elif decode.initial_prompt:
        prompt = bundle.tokenizer.encode(" " + decode.initial_prompt.strip())
    else:
        prompt = []
    if journal is not None:
        journal.start(bundle.name, info.options, duration, language, probability)
    run = _Run(bundle, options, info, journal, replace(decode, language=language), prompt, progress)
    return run.segments(stream, windows), info


class _Resumed:
    """The windows that end after `resume_at` (a straddling one is cut there), with coverage totals that leave
    out the windows skipped because a journal already holds them."""

    def __init__(self, windows: WindowIterator, resume_at: int, restart: int, first_index: int):
        self.windows, self.resume_at, self.restart, self.skipped_s = windows, resume_at, restart, 0.0
        self.first_index = first_index

    def __iter__(self) -> Iterator[Window]:
        """Windows numbered on from first_index (the journal's windows keep theirs)."""
        index = self.first_index
        for window in self.windows:
            if window.end_sample <= self.resume_at:
                self.skipped_s += window.speech_s
                continue
            cut = max(0, self.resume_at - window.start_sample)
            start = window.start_sample + cut
            spans = tuple((max(a, start), b) for a, b in window.spans if b > start)
            yield replace(window, index=index, start_sample=start, audio=window.audio[cut:], spans=spans)
            index += 1

    @property
    def speech_s(self) -> float:
        return self.windows.speech_s - self.skipped_s

    @property
    def duration_s(self) -> float:
        return self.restart / SAMPLE_RATE + self.windows.duration_s


def _detect(bundle: ModelBundle, window: Window) -> tuple[str, float]:
    """Language of the first window (Whisper detects once, on the first 30 s of speech)."""
    features = _Encoder(bundle.model)([window.audio])
    with torch.inference_mode():
        codes, probs = detect_language(bundle.model, bundle.tokenizer, bundle.model.cross_memory(features))
    return codes[0], probs[0]
