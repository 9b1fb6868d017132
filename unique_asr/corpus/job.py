"""The coordinator's side of a corpus job, shared by every launcher: plan (what is left to do), run it in
this process (`run_local`), and write the merged result manifest at the end."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from unique_asr.corpus.plan import CorpusItem, items_from_inputs, items_from_manifest, longest_first, with_durations
from unique_asr.corpus.progress import Progress
from unique_asr.corpus.state import JobState, job_identity
from unique_asr.corpus.work import JobSpec, Worker, failed_record
from unique_asr.errors import UniqueASRError


@dataclass
class Plan:
    items: list[CorpusItem]  # every input, in input order (the result manifest's order)
    pending: list[CorpusItem]  # what workers still have to do, longest first
    done_s: float  # audio seconds of items already committed (ok or failed)
    done_files: int
    failed: int

    @property
    def total_s(self) -> float:
        return sum(item.duration or 0.0 for item in self.items)

    def progress(self, quiet: bool, interval: float) -> Progress:
        return Progress(self.total_s, len(self.items), self.done_s, self.done_files, self.failed, quiet=quiet,
                        interval=interval)


def collect_items(inputs: Sequence[str], manifest: str | None) -> list[CorpusItem]:
    items = items_from_manifest(manifest) if manifest else []
    if inputs:
        more = items_from_inputs(inputs)
        clash = {i.id for i in items} & {i.id for i in more}
        if clash:
            raise UniqueASRError(f"the manifest and the inputs both name {sorted(clash)[0]!r}")
        items += more
    if not items:
        raise UniqueASRError("nothing to transcribe: give audio files, folders, globs or --manifest")
    return items


def plan(spec: JobSpec, inputs: Sequence[str], manifest: str | None) -> Plan:
    """Open (or check) the job folder, list and probe the inputs, and sort out what is left: committed items
    are skipped (failed ones too, unless retry_failed); items that cannot be read, or whose workers were
    lost `max_attempts` times inside them, are committed as failed here; the rest is pending."""
    state = JobState(spec.output_dir)
    state.open(job_identity(spec.model, spec.options, spec.formats))
    items = with_durations(collect_items(inputs, manifest), state.read_plan_cache())
    state.write_plan(items)
    pending, done_s, done_files, failed = [], 0.0, 0, 0
    for item in items:
        record = state.done(item)
        if record is None or (spec.retry_failed and record.get("status") == "failed" and item.error is None):
            claim = state.claim_of(item) if record is None else None
            if item.error is not None:
                record = failed_record(item, item.error)
            elif claim is not None and claim.get("attempt", 0) >= spec.max_attempts:
                record = failed_record(item, f"{item.source}: its worker was lost {claim['attempt']} times while "
                                       "transcribing it", claim.get("worker"), claim["attempt"])
            else:
                pending.append(item)
                continue
            state.commit(record)
        done_s += item.duration or 0.0
        done_files += 1
        failed += record.get("status") != "ok"
    return Plan(items, longest_first(pending), done_s, done_files, failed)


def run_local(spec: JobSpec, job: Plan, *, quiet: bool, interval: float) -> None:
    """One process, one model: the pending items longest first."""
    if not job.pending:
        return  # a finished job run again: nothing to load a model for
    progress = job.progress(quiet, interval)
    try:
        worker = Worker(spec, "local", advance=progress.advance)
        for item in job.pending:
            record = worker.process(item)
            progress.file_done(record.get("status") == "ok")
    finally:
        progress.close()


@dataclass(frozen=True)
class Summary:
    ok: int
    failed: int
    pending: int

    @property
    def status(self) -> int:
        """Exit status: 0 when every file is ok."""
        return 0 if not self.failed and not self.pending else 1


def finish(spec: JobSpec, job: Plan, results: Path, *, quiet: bool) -> Summary:
    """Write the merged result manifest (one line per input, in input order) and print the summary."""
    rows = JobState(spec.output_dir).write_results(results, job.items)
    ok = sum(r.get("status") == "ok" for r in rows)
    failed = [r for r in rows if r.get("status") == "failed"]
    pending = len(rows) - ok - len(failed)
    for row in failed[:20]:
        print(f"unique-corpus: failed: {row['id']}: {row.get('error')}", file=sys.stderr)
    if len(failed) > 20:
        print(f"unique-corpus: ... and {len(failed) - 20} more failures (see {results})", file=sys.stderr)
    if not quiet or failed or pending:
        hours = sum(r.get("duration_s") or 0.0 for r in rows if r.get("status") == "ok") / 3600
        print(f"unique-corpus: {ok} ok ({hours:.2f} h audio), {len(failed)} failed, {pending} pending -> {results}",
              file=sys.stderr)
    return Summary(ok, len(failed), pending)
