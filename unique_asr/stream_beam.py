"""Beam search over one window's transcript for a decoder-only speech-LLM: transformers' beam search
(`GenerationMixin._beam_search` with do_sample=False, early_stopping=False), so our beams equal
`generate(num_beams=N, do_sample=False, length_penalty=...)` on the same weights and context.

Per step, of the N running beams' accumulated log-probabilities over the vocabulary, the top K = max(2, 1 + number
of end ids) x N continuations are kept; those among the first N that end (an end id, max_new_tokens reached, or,
with `repetition`, a loop Whisper's repetition guard catches: transformers has no such guard) become finished
hypotheses scored logprob / penalty(generated length, end id included), of which the best N are
kept; the best N that do not end are the next running beams. The search stops when no running beam can beat the
worst finished hypothesis (the best running score over the current length: transformers' heuristic) or when every
continuation ends. The result is the best finished hypothesis.

Length penalty (DecodeOptions.length_penalty, one meaning for both families): None divides by the length (=
transformers' length_penalty=1.0), a value p by ((5 + length) / 6) ** p (Whisper's; p = 0 is transformers' 0).

This module is the arithmetic only (float32 tensors on the host, in transformers' order of operations, so ties
and the -1e9 masks resolve identically); the rows, their shared pages and the finished hypotheses' snapshots
belong to the caller (unique_asr.stream_decoding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unique_asr.decoding import ends_in_loop

NEG = -1.0e9  # transformers' mask value


def penalty(length: int, length_penalty: float | None) -> float:
    """The divisor of a hypothesis's summed log-probability (see the module docstring)."""
    return float(length) if length_penalty is None else ((5 + length) / 6) ** length_penalty


@dataclass
class Finished:
    """A finished hypothesis: tokens (generated, its end id included when it has one), the summed log-probability,
    the running beam it grew from (before its last token) and the caller's handle on that beam's state."""

    tokens: list[int]
    sum_logprob: float
    source: int
    held: object = None
    looped: bool = False  # ended by the repetition guard


@dataclass
class Advance:
    """What one step decided: sources[i], the beam that running beam i continues (reorder), and new[j] the
    finished hypotheses that entered the kept set this step (their `held` to be filled by the caller before the
    rows are reordered); dropped: hypotheses pushed out (their `held` to release); done: the search ended."""

    sources: list[int]
    new: list[Finished]
    dropped: list[Finished]
    done: bool


class WindowBeams:
    """One window's beam search state (see the module docstring)."""

    def __init__(self, beam: int, eos_ids, max_new_tokens: int, length_penalty: float | None,
                 repetition: tuple[int, int] | None = None):
        self.beam, self.eos, self.max_new, self.length_penalty = beam, set(eos_ids), max_new_tokens, length_penalty
        self.repetition = repetition  # (n-gram, repeats): unique_asr.decoding.ends_in_loop
        self.k = max(2, 1 + len(self.eos)) * beam
        self.scores = torch.full((beam,), NEG, dtype=torch.float32)
        self.scores[0] = 0.0  # the beams start identical: only beam 0 expands at the first step
        self.running: list[list[int]] = [[] for _ in range(beam)]
        self.finished_scores = torch.full((beam,), NEG, dtype=torch.float32)
        self.is_finished = torch.zeros(beam, dtype=torch.bool)
        self.finished: list[Finished | None] = [None] * beam
        self.top_mask = torch.arange(self.k) < beam
        self.unsatisfied = torch.ones((), dtype=torch.bool)
        self.generated = 0

    def accumulated(self, logprobs: torch.Tensor) -> torch.Tensor:
        """logprobs float32 [N, V] of the running beams (on any device) -> their continuations' accumulated
        log-probabilities [N * V] (the caller takes the top `k` of many windows at once)."""
        return (logprobs + self.scores.to(logprobs.device)[:, None]).reshape(-1)

    @property
    def last_tokens(self) -> list[int]:
        return [seq[-1] for seq in self.running]

    def advance(self, top_logprobs: torch.Tensor, top_index: torch.Tensor, vocab: int) -> Advance:
        """One step from the top `k` accumulated log-probabilities (float32 [k], descending) and their flat
        indices (int64 [k]) into [N * V] on the host."""
        source, token = (top_index // vocab).tolist(), (top_index % vocab).tolist()
        seqs = [self.running[b] + [t] for b, t in zip(source, token)]
        looped = [self.repetition is not None and t not in self.eos and ends_in_loop(seq, *self.repetition)
                  for t, seq in zip(token, seqs)]
        hits = torch.tensor([t in self.eos or self.generated + 1 >= self.max_new or loop
                             for t, loop in zip(token, looped)])
        running_lp = top_logprobs + hits.to(torch.float32) * NEG
        order = torch.topk(running_lp, k=self.beam)[1]
        # finished hypotheses: only the first N continuations may finish (transformers' top_num_beam_mask)
        just = hits & self.top_mask
        scored = top_logprobs / penalty(self.generated + 1, self.length_penalty)
        scored = scored + (~self.unsatisfied).to(torch.float32) * NEG
        scored = scored + (~just) * NEG
        merged = torch.cat((self.finished_scores, scored))
        keep = torch.topk(merged, k=self.beam)[1]
        candidates = [Finished(seqs[j], float(top_logprobs[j]), source[j], looped=looped[j]) if just[j] else None
                      for j in range(self.k)]
        entries = [*self.finished, *candidates]
        kept = [entries[j] for j in keep.tolist()]
        new = [e for j, e in zip(keep.tolist(), kept) if j >= self.beam and e is not None]
        kept_ids = {id(e) for e in kept if e is not None}
        dropped = [e for e in self.finished if e is not None and id(e) not in kept_ids]
        self.finished, self.finished_scores = kept, merged[keep]
        self.is_finished = torch.cat((self.is_finished, just))[keep]
        self.scores = running_lp[order]
        self.running = [seqs[i] for i in order.tolist()]
        sources = [source[i] for i in order.tolist()]
        self.generated += 1
        best = self.scores[:1] / penalty(self.generated, self.length_penalty)
        worst = torch.where(self.is_finished, self.finished_scores.min(), NEG)
        self.unsatisfied = self.unsatisfied & (best > worst).any()
        return Advance(sources, new, dropped, not bool(self.unsatisfied) or bool(hits.all()))

    def best(self) -> Finished:
        """The result: the best finished hypothesis (transformers returns sequences[:, 0])."""
        if self.finished[0] is None:
            raise RuntimeError("beam search ended with no finished hypothesis")
        return self.finished[0]

    def held(self) -> list[Finished]:
        return [e for e in self.finished if e is not None]
