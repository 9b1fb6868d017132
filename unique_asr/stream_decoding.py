"""Many long recordings decoded together by a decoder-only speech-LLM: N rows of one paged KV cache.

Each row holds one recording as one sequence (the prompt's head once, then per window: prefix, the window's audio
tokens, suffix, its transcript; unique_asr.models.speech_family). `RowDecoder.run` batches continuously: a row
whose window transcript ended is prefilled with its recording's next window while the other rows keep
generating, and a row whose recording ended takes the next recording, so no row waits for the slowest one.
Every step appends one token to every generating row (`LLM.decode_step` over those rows, attention read through
the row's pages with the SparsityConfig: dense, UNIQUE, Quest, window, ...).

On CUDA every step in which all rows generate is one CUDA graph replay of the step's device half, after its
host half (`PagedRows.plan_step`: eviction, page reservation, positions) through the family interface's
`CapturedDecodeStep`; steps over only some rows (the tail, when no recording is left to take a free row) run
eagerly. The next tokens and their log-probabilities of all rows come to the host in one transfer per step.

Context policy: a row holds at most `pages_per_row` pages, the smaller of the model's trained context
(max_position_embeddings) and what free memory allows for N rows (`plan_pages`). Past it, the prompt's head
(the sink pages) stays and the oldest whole pages after it are evicted; rotary positions keep counting, so kept
keys keep the positions they were stored with (unique_asr.models.paged_rows); this is logged once per run.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from unique_asr.audio import LogMel
from unique_asr.models.graph_step import CapturedDecodeStep
from unique_asr.models.paged_rows import PagedRows, plan_pages


@dataclass
class WindowJob:
    """One window of a recording to decode: audio float32 16 kHz (at most the model's window); forced: a journaled
    transcript to replay (teacher-forced, resume) instead of generating; key: the caller's handle."""

    audio: np.ndarray
    key: object = None
    forced: tuple[int, ...] | None = None


@dataclass
class WindowResult:
    """tokens: the transcript ids, its end id included when one was produced; sum_logprob of those choices."""

    recording: object
    job: WindowJob
    tokens: list[int]
    sum_logprob: float


@dataclass
class _Row:
    recording: object
    jobs: Iterator[WindowJob]
    job: WindowJob | None = None
    tokens: list[int] = field(default_factory=list)
    sum_logprob: float = 0.0


class RowDecoder:
    """Greedy continuous-batching decoder over `rows` rows (see the module docstring).

    recordings: objects with `jobs()` -> iterator of WindowJob (read lazily, as the row gets to them).
    `run(recordings)` yields a WindowResult per window, and the recording itself once its windows are all done.
    """

    def __init__(self, model, rows: int, language: str | None, max_new_tokens: int,
                 max_tokens: int | None = None, cuda_graph: bool = True):
        self.model, self.prompt = model, model.prompt(language)
        self.max_new = max_new_tokens
        net = model.net
        weight = next(model.parameters())
        self.device = weight.device
        self.dtype = weight.dtype if self.device.type == "cuda" else torch.float32
        n_audio = net.config.tokens_per_window
        chunk = len(self.prompt.chunk(net.config.audio_token_id, n_audio))
        pages = plan_pages(model, rows, self.dtype, self.device, chunk + max_new_tokens + 1, max_tokens)
        self.state = PagedRows.allocate(model, rows, pages, self.dtype)
        self.mel = LogMel(net.config.encoder.n_mels, self.device)
        self.eos = set(self.prompt.eos_ids)
        self.cuda_graph = cuda_graph and self.device.type == "cuda"
        self.captured: CapturedDecodeStep | None = None  # captured at the first step in which every row steps

    def _audio_tokens(self, jobs: Sequence[WindowJob]) -> torch.Tensor:
        """Audio tokens [W, n, d] of the jobs' windows (each zero-padded to the model's window)."""
        samples = self.model.window_samples
        batch = torch.zeros(len(jobs), samples)
        for i, job in enumerate(jobs):
            audio = torch.as_tensor(job.audio[:samples])
            batch[i, : audio.shape[0]] = audio
        mel = self.mel(batch.to(self.device), padding=False)
        return self.model.memory(mel.to(next(self.model.parameters()).dtype))

    def _choose_all(self, rows: Sequence[_Row], logits: torch.Tensor) -> None:
        """Each row's next token (argmax, or the journaled one when replaying) and its log-probability, for many
        rows with one device-to-host transfer: logits [A, V] of rows [A]."""
        forced = torch.tensor([row.job.forced[len(row.tokens)] if row.job.forced is not None else -1
                               for row in rows], dtype=torch.int64).to(self.device)
        logits = logits.float()
        token = torch.where(forced >= 0, forced, logits.argmax(-1))
        logprob = torch.log_softmax(logits, dim=-1).gather(1, token[:, None])[:, 0]
        for row, t, lp in zip(rows, token.tolist(), logprob.tolist()):
            row.sum_logprob += lp
            row.tokens.append(t)

    def _step(self, last: torch.Tensor, active: list[int]) -> torch.Tensor:
        """Logits [A, V] after appending last [A] to the active rows: a graph replay when every row steps."""
        if self.cuda_graph and len(active) == self.state.rows:
            if self.captured is None:
                self.captured = CapturedDecodeStep(self.model, self.state, None)
            return self.captured(last[:, None])[:, 0]
        return self.state.step(last, active)

    def _ends(self, row: _Row) -> bool:
        if row.job.forced is not None:
            return len(row.tokens) == len(row.job.forced)
        return row.tokens[-1] in self.eos or len(row.tokens) == self.max_new

    @torch.inference_mode()
    def run(self, recordings: Iterable) -> Iterator[WindowResult | object]:
        pending = iter(recordings)
        rows: list[_Row | None] = [None] * self.state.rows
        exhausted = False
        config = self.model.net.config
        while True:
            starting: list[int] = []
            for r in range(len(rows)):
                while rows[r] is None or rows[r].job is None:
                    if rows[r] is None:
                        recording = None if exhausted else next(pending, None)
                        if recording is None:
                            exhausted = True
                            break
                        self.state.reset(r, self.prompt.prompt_ids)
                        rows[r] = _Row(recording, iter(recording.jobs()))
                    job = next(rows[r].jobs, None)
                    if job is None:
                        yield rows[r].recording
                        rows[r] = None
                        continue
                    rows[r].job, rows[r].tokens, rows[r].sum_logprob = job, [], 0.0
                    starting.append(r)
            if starting:  # every window's chunk has the same length (audio padded to the window): one prefill
                starting.sort()
                audio = self._audio_tokens([rows[r].job for r in starting])
                ids = self.state._ids(self.prompt.chunk(config.audio_token_id, audio.shape[1]))
                x = self.model.net.embed(ids.expand(len(starting), -1), audio.flatten(0, 1))
                self._choose_all([rows[r] for r in starting], self.state.prefill_rows(starting, x))
            active = [r for r in range(len(rows)) if rows[r] is not None and rows[r].job is not None]
            if not active:
                return
            last = torch.tensor([rows[r].tokens[-1] for r in active], dtype=torch.int64, device=self.device)
            logits = self._step(last, active)  # the chosen token joins the context, an end id included
            ended = [i for i, r in enumerate(active) if self._ends(rows[r])]
            going = [i for i in range(len(active)) if i not in ended]
            if going:  # before yielding: a replay's logits buffer is read before anything else runs
                self._choose_all([rows[active[i]] for i in going],
                                 logits if len(going) == len(active) else logits[going])
            for i in ended:
                row = rows[active[i]]
                yield WindowResult(row.recording, row.job, row.tokens, row.sum_logprob)
                row.job = None
