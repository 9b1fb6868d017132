"""Many long recordings decoded together by a decoder-only speech-LLM: N rows of one paged KV cache.

Each row holds one recording as one sequence (the prompt's head once, then per window: prefix, the window's audio
tokens, suffix, its transcript; unique_asr.models.speech_family). `RowDecoder.run` batches continuously: a row
whose window transcript ended is prefilled with its recording's next window while the other rows keep
generating, and a row whose recording ended takes the next recording, so no row waits for the slowest one.
Every step appends one token to every generating row (`LLM.decode_step` over those rows, attention read through
the row's pages with the SparsityConfig: dense, UNIQUE, Quest, window, ...).

On CUDA every step is one CUDA graph replay of the step's device half, after its host half
(`PagedRows.plan_step`: eviction, page reservation, positions) through the family interface's
`CapturedDecodeStep`; steps over only some rows (the tail, when no recording is left to take a free row) have
graphs of their own, keyed by the number of rows. Greedy rows choose their next tokens on the device (the next
step's input) and send them with their log-probabilities to the host in one queued copy per step, which the host
reads one step later: its half of the next step (reading choices, ending windows, reading audio, planning pages,
launching) runs while the device computes the previous one (`_run_greedy`; nothing in the loop waits for the
device otherwise, a GPU test under sync debug mode). Beam search decides each step's row order on the host, so
it reads every step at once.

Context policy: a row holds at most `pages_per_row` pages, the smaller of the model's trained context
(max_position_embeddings) and what free memory allows for N rows (`plan_pages`). Past it, the prompt's head
(the sink pages) stays and the oldest whole pages after it are evicted; rotary positions keep counting, so kept
keys keep the positions they were stored with (unique_asr.models.paged_rows); this is logged once per run.

Beam search (beam > 1; unique_asr.stream_beam: transformers' algorithm): each recording owns `beam` consecutive
rows (a slot). Its window's chunk is prefilled once into the slot's first row (home); the beams then share the
recording's pages by reference (`PagedRows.share`: only each beam's partial last page is copied, on write), every
step reorders the slot's rows by the beams they continue, and a hypothesis that finishes holds its beam's pages
in a snapshot. When the search ends, the best hypothesis's snapshot becomes the home row and its last token is
prefilled at the head of the recording's next window (the context holds every transcript token, as in greedy);
the other rows and snapshots give their pages back, so a finished recording leaves no page referenced.
Journaled windows (resume) are replayed on the home row alone, token by token.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from unique_asr.audio import LogMel
from unique_asr.cache.paged_kv import upload
from unique_asr.decoding import ends_in_loop
from unique_asr.models.graph_step import CapturedDecodeStep
from unique_asr.models.paged_rows import PagedRows, plan_pages
from unique_asr.stream_beam import WindowBeams


@dataclass
class WindowJob:
    """One window of a recording to decode: audio float32 16 kHz (at most the model's window); forced: a journaled
    transcript to replay (teacher-forced, resume) instead of generating; key: the caller's handle."""

    audio: np.ndarray
    key: object = None
    forced: tuple[int, ...] | None = None


@dataclass
class WindowResult:
    """tokens: the transcript ids, its end id included when one was produced; sum_logprob of those choices;
    looped: the repetition guard ended it (its text ends in the loop it caught)."""

    recording: object
    job: WindowJob
    tokens: list[int]
    sum_logprob: float
    looped: bool = False


@dataclass
class _Row:
    recording: object
    jobs: Iterator[WindowJob]
    job: WindowJob | None = None
    tokens: list[int] = field(default_factory=list)
    sum_logprob: float = 0.0
    search: WindowBeams | None = None  # the window's beam search (beam > 1, not replaying)
    pending: int | None = None  # the last window's final token, prefilled ahead of the next window
    issued: int = 0  # choices queued for the window (greedy: the host reads them one step later)
    looped: bool = False  # the repetition guard ended the window


def _rows_index(rows: list[int], device: torch.device) -> slice | torch.Tensor:
    """An index of `rows` (ascending) that needs no host-to-device copy when they are consecutive: a slice."""
    if rows == list(range(rows[0], rows[-1] + 1)):
        return slice(rows[0], rows[-1] + 1)
    return upload(np.asarray(rows, dtype=np.int64), device)


@dataclass
class _Choices:
    """Next tokens chosen on the device for some windows, on their way to the host: owners (slot, job) of each,
    values [A, 2] (token id, log-probability) float64, pinned on CUDA and filled by a queued copy."""

    owners: list[tuple[int, WindowJob]]
    host: torch.Tensor
    ready: torch.cuda.Event | None

    @classmethod
    def send(cls, owners: list, values: torch.Tensor) -> _Choices:
        if values.device.type != "cuda":
            return cls(owners, values, None)
        host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
        host.copy_(values, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record()
        return cls(owners, host, ready)

    def values(self) -> list[list[float]]:
        if self.ready is not None:
            self.ready.synchronize()
        return self.host.tolist()


class RowDecoder:
    """Continuous-batching decoder over `rows` recordings at once, greedy or with `beam` beams each (see the module
    docstring).

    recordings: objects with `jobs()` -> iterator of WindowJob (read lazily, as the row gets to them).
    `run(recordings)` yields a WindowResult per window, and the recording itself once its windows are all done.
    length_penalty: the beams' (unique_asr.stream_beam.penalty).
    repetition: (n-gram, repeats) of Whisper's repetition guard (DecodeOptions.repetition_ngram / _max): a greedy
    window whose transcript ends in an n-gram (n >= n-gram) repeated more than `repeats` times ends there, its
    result marked `looped` (None: no guard); under beam search a looping continuation ends as a finished
    hypothesis (unique_asr.stream_beam).
    """

    def __init__(self, model, rows: int, language: str | None, max_new_tokens: int,
                 max_tokens: int | None = None, cuda_graph: bool = True, beam: int = 1,
                 length_penalty: float | None = None, repetition: tuple[int, int] | None = None):
        self.model, self.prompt = model, model.prompt(language)
        self.max_new, self.beam, self.length_penalty = max_new_tokens, beam, length_penalty
        self.repetition = repetition
        net = model.net
        weight = next(model.parameters())
        self.device = weight.device
        self.dtype = weight.dtype if self.device.type == "cuda" else torch.float32
        n_audio = net.config.tokens_per_window
        chunk = len(self.prompt.chunk(net.config.audio_token_id, n_audio))
        S = model.sparsity.page_size
        # beams: each of the beam running and beam finished hypotheses holds at most its window's transcript in
        # private pages (+ the copied partial page) beside the recording's shared ones
        spare = 0 if beam == 1 else 2 * beam * (-(-(max_new_tokens + 1) // S) + 2)
        needed = chunk + max_new_tokens + 1 + (beam > 1)  # beams: the last window's token rides ahead of the chunk
        pages = plan_pages(model, rows, self.dtype, self.device, needed, max_tokens, spare)
        self.state = PagedRows.allocate(model, rows * beam, pages, self.dtype, num_pages=rows * (pages + spare))
        self.mel = LogMel(net.config.encoder.n_mels, self.device)
        self.eos = set(self.prompt.eos_ids)
        self.cuda_graph = cuda_graph and self.device.type == "cuda"
        self.captured: CapturedDecodeStep | None = None  # made at the first step; a graph per plan key
        self.next_tokens = torch.zeros(rows, dtype=torch.int64, device=self.device)  # greedy: each row's next input

    def _audio_tokens(self, jobs: Sequence[WindowJob]) -> torch.Tensor:
        """Audio tokens [W, n, d] of the jobs' windows (each zero-padded to the model's window)."""
        samples = self.model.window_samples
        batch = np.zeros((len(jobs), samples), dtype=np.float32)
        for i, job in enumerate(jobs):
            audio = np.asarray(job.audio[:samples], dtype=np.float32)
            batch[i, : audio.shape[0]] = audio
        mel = self.mel(upload(batch, self.device), padding=False)  # queued: the host does not wait for the device
        return self.model.memory(mel.to(next(self.model.parameters()).dtype))

    def _step(self, last: torch.Tensor, active: list[int]) -> torch.Tensor:
        """Logits [A, V] after appending last [A] to the active rows: a graph replay (one graph per key of the
        plan, the number of rows included when only some step)."""
        if self.cuda_graph:
            if self.captured is None:
                self.captured = CapturedDecodeStep(self.model, self.state, None)
            return self.captured(last[:, None], None if len(active) == self.state.rows else active)[:, 0]
        return self.state.step(last, active)

    def _ends(self, row: _Row) -> bool:
        """Whether the token just appended ends the row's window (an end id, max_new, the replayed transcript's
        length, or a loop the repetition guard catches: then `row.looped`)."""
        if row.job.forced is not None:
            return len(row.tokens) == len(row.job.forced)
        if row.tokens[-1] in self.eos or len(row.tokens) == self.max_new:
            return True
        row.looped = self.repetition is not None and ends_in_loop(row.tokens, *self.repetition)
        return row.looped

    def _home(self, slot: int) -> int:
        return slot * self.beam

    def _slot_rows(self, slot: int) -> list[int]:
        return list(range(slot * self.beam, (slot + 1) * self.beam))

    def _prefill(self, slots: list[int], rows: list[_Row | None]) -> torch.Tensor:
        """Prefill each starting slot's window chunk (after its pending token, if any) into its home row: logits
        [A, V] after each chunk, in the order of `slots` (ascending). One batched prefill per chunk length."""
        config = self.model.net.config
        audio = self._audio_tokens([rows[r].job for r in slots])
        chunk = self.prompt.chunk(config.audio_token_id, audio.shape[1])
        out = [None] * len(slots)
        for has_pending in (False, True):
            group = [i for i, r in enumerate(slots) if (rows[r].pending is not None) == has_pending]
            if not group:
                continue
            # ids on the host: embed counts the placeholders there and queues the copy
            ids = torch.tensor([[rows[slots[i]].pending] * has_pending + chunk for i in group], dtype=torch.int64)
            x = self.model.net.embed(ids, audio[_rows_index(group, self.device)].flatten(0, 1))
            logits = self.state.prefill_rows([self._home(slots[i]) for i in group], x)
            for j, i in enumerate(group):
                out[i] = logits[j]
        for r in slots:
            rows[r].pending = None
        return torch.stack(out)

    def _searching(self, row: _Row | None) -> bool:
        return row is not None and row.job is not None and row.search is not None

    def _beam_steps(self, slots: list[int], rows: list[_Row | None], logits: torch.Tensor):
        """Advance the beam searches of `slots` by one step from their rows' logits [A, N, V] (first step: the
        home row's logits repeated). Finished hypotheses are snapshotted, rows reordered (one `reorder` over the
        state), searches that end load their best hypothesis into the home row. Yields a WindowResult per ended
        window."""
        vocab = logits.shape[-1]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        acc = torch.stack([rows[r].search.accumulated(lp) for r, lp in zip(slots, logprobs)])
        top_lp, top_index = acc.topk(rows[slots[0]].search.k, dim=-1)
        top_lp, top_index = top_lp.cpu(), top_index.cpu()
        index = list(range(self.state.rows))
        ended = []
        for j, r in enumerate(slots):
            row, base = rows[r], self._home(r)
            step = row.search.advance(top_lp[j], top_index[j], vocab)
            for entry in step.new:  # before the rows move: a hypothesis holds its beam's state of now
                entry.held = self.state.snapshot(base + entry.source)
            for entry in step.dropped:
                self.state.drop_snapshot(entry.held)
            if step.done:
                ended.append(r)
            else:
                for i, src in enumerate(step.sources):
                    index[base + i] = base + src
        self.model.reorder(self.state, None, torch.tensor(index))
        for r in ended:
            row = rows[r]
            best = row.search.best()
            self.state.load_snapshot(self._home(r), best.held)
            for entry in row.search.held():
                self.state.drop_snapshot(entry.held)
            self.state.release(self._slot_rows(r)[1:])
            row.tokens, row.sum_logprob, row.pending, row.search = list(best.tokens), best.sum_logprob, \
                best.tokens[-1], None
            row.looped = best.looped
            yield WindowResult(row.recording, row.job, row.tokens, row.sum_logprob, row.looped)
            row.job = None

    def _start(self, slots: list[int], rows: list[_Row | None], logits: torch.Tensor):
        """After the prefill: greedy / replayed slots choose their first token, beam slots start their search."""
        plain = [i for i, r in enumerate(slots) if self.beam == 1 or rows[r].job.forced is not None]
        if plain:
            self._read(self._choose([slots[i] for i in plain], rows, logits[plain]), rows)  # read at once
        searched = [i for i in range(len(slots)) if i not in plain]
        for i in searched:
            rows[slots[i]].search = WindowBeams(self.beam, self.eos, self.max_new, self.length_penalty,
                                                self.repetition)
        if searched:
            first = logits[searched][:, None].expand(-1, self.beam, -1)
            yield from self._beam_steps([slots[i] for i in searched], rows, first)

    def _fill(self, rows: list[_Row | None], source: Iterator):
        """Give every free slot its recording's next window (or the next recording): yields each recording whose
        windows are all done; returns the slots that start a window (ascending)."""
        starting: list[int] = []
        for r in range(len(rows)):
            while rows[r] is None or rows[r].job is None:
                if rows[r] is None:
                    recording = next(source, None)  # an iterator stays exhausted once it is
                    if recording is None:
                        break
                    self.state.reset(self._home(r), self.prompt.prompt_ids)
                    rows[r] = _Row(recording, iter(recording.jobs()))
                job = next(rows[r].jobs, None)
                if job is None:
                    yield rows[r].recording
                    self.state.release(self._slot_rows(r))
                    rows[r] = None
                    continue
                rows[r].job, rows[r].tokens, rows[r].sum_logprob, rows[r].issued = job, [], 0.0, 0
                rows[r].looped = False
                starting.append(r)
        return starting

    @torch.inference_mode()
    def run(self, recordings: Iterable) -> Iterator[WindowResult | object]:
        source = iter(recordings)
        if self.beam == 1:
            yield from self._run_greedy(source)
        else:
            yield from self._run_beams(source)

    def _run_greedy(self, source: Iterator) -> Iterator[WindowResult | object]:
        """Greedy rows, the host one step behind the device: step s is queued (its input tokens are the device's
        own choices of step s - 1) before the host reads the choices of step s - 1, so the host's half of a step
        (reading choices, ending windows, reading audio, planning pages, launching) runs while the device
        computes the previous one instead of between them. A window whose choice ended it learns so after the
        step that appends that choice was queued, which is the step the synchronous order runs too (the chosen
        token joins the context, an end id included); the one choice the device makes past it is dropped."""
        rows: list[_Row | None] = [None] * self.state.rows
        unread: list[_Choices] = []
        while True:
            starting = yield from self._fill(rows, source)
            if starting:  # every window's chunk has the same length (audio padded to the window): one prefill
                unread.append(self._choose(starting, rows, self._prefill(starting, rows)))
            generating = [r for r in range(len(rows)) if rows[r] is not None and rows[r].job is not None]
            if not generating and not unread:
                return
            queued = None
            if generating:
                where = _rows_index(generating, self.device)
                queued = self._choose(generating, rows, self._step(self.next_tokens[where], generating), where)
            for choices in unread:
                for r in self._read(choices, rows):
                    row = rows[r]
                    yield WindowResult(row.recording, row.job, row.tokens, row.sum_logprob, row.looped)
                    row.job = None
            unread = [queued] if queued is not None else []

    def _choose(self, slots: list[int], rows: list[_Row | None], logits: torch.Tensor, where=None) -> _Choices:
        """Queue the choice of each slot's next token from logits [A, V] (argmax, or the journaled token while
        replaying a window, resume) on the device: written into `next_tokens` for the next step (at `where`, the
        slots' `_rows_index` when the caller has it), and sent to the host with its log-probability in one queued
        copy (`_read`; beam search's plain rows read it at once)."""
        logits = logits.float()
        token = logits.argmax(-1)
        jobs = [rows[r].job for r in slots]
        if any(job.forced is not None for job in jobs):
            forced = [job.forced[rows[r].issued] if job.forced is not None and rows[r].issued < len(job.forced)
                      else -1 for r, job in zip(slots, jobs)]
            forced = upload(np.asarray(forced, dtype=np.int64), self.device)
            token = torch.where(forced >= 0, forced, token)
        logprob = torch.log_softmax(logits, dim=-1).gather(1, token[:, None])[:, 0]
        self.next_tokens[_rows_index(slots, self.device) if where is None else where] = token
        for r in slots:
            rows[r].issued += 1
        # the ids (exact in float64) beside their log-probabilities: one transfer
        return _Choices.send([(r, rows[r].job) for r in slots], torch.stack([token.double(), logprob.double()], 1))

    def _read(self, choices: _Choices, rows: list[_Row | None]) -> list[int]:
        """Append the choices (waiting for them) to the windows they were made for; the slots whose window ended."""
        ended = []
        for (r, job), (token, logprob) in zip(choices.owners, choices.values()):
            row = rows[r]
            if row is None or row.job is not job:
                continue  # made past the window's end (see _run_greedy)
            row.tokens.append(int(token))
            row.sum_logprob += logprob
            if self._ends(row):
                ended.append(r)
        return ended

    def _run_beams(self, source: Iterator) -> Iterator[WindowResult | object]:
        """Beam search (or its journaled windows replayed): the host decides every step's row order, so steps and
        the host's reading of their logits alternate."""
        rows: list[_Row | None] = [None] * (self.state.rows // self.beam)
        while True:
            starting = yield from self._fill(rows, source)
            if starting:  # every window's chunk has the same length (audio padded to the window): one prefill
                yield from self._start(starting, rows, self._prefill(starting, rows))
                if any(rows[r] is None or rows[r].job is None for r in starting):
                    continue  # a beam search ended at its first token: that slot starts its next window
            slots = [r for r in range(len(rows)) if rows[r] is not None and rows[r].job is not None]
            if not slots:
                return
            active, last = [], []
            for r in slots:
                if rows[r].search is not None:
                    active += self._slot_rows(r)
                    last += rows[r].search.last_tokens
                else:
                    active.append(self._home(r))
                    last.append(rows[r].tokens[-1])
            last = upload(np.asarray(last, dtype=np.int64), self.device)
            logits = self._step(last, active)  # the chosen token joins the context, an end id included
            where = {row: i for i, row in enumerate(active)}
            plain = [r for r in slots if rows[r].search is None]
            ended = [r for r in plain if self._ends(rows[r])]
            going = [r for r in plain if r not in ended]
            searched = [r for r in slots if rows[r].search is not None]
            # before yielding: a replay's logits buffer is read before anything else runs
            beam_logits = (logits[[where[row] for r in searched for row in self._slot_rows(r)]]
                           .view(len(searched), self.beam, -1) if searched else None)
            if going:
                self._read(self._choose(going, rows, logits[[where[self._home(r)] for r in going]]), rows)
            for r in ended:
                row = rows[r]
                yield WindowResult(row.recording, row.job, row.tokens, row.sum_logprob, row.looped)
                row.job = None
            if searched:
                yield from self._beam_steps(searched, rows, beam_logits)
