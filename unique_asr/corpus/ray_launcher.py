"""A corpus job as a Ray program: one actor per GPU holding a loaded model, files as actor tasks.

    unique-corpus talks/ --output_dir /shared/out --launcher ray --ray_address auto   # a running cluster
    unique-corpus talks/ --output_dir out --launcher ray                              # a local one

The driver plans (what is left, from the job folder), hands the pending files out longest first, one at a
time to whichever actor is free (dynamic balancing: a slow file does not hold up a queue behind it), shows
the progress line and writes the merged result manifest. An actor whose process dies is restarted by Ray
(the model loads again) and its file is retried (`max_task_retries`); the retry continues the file from its
per-window journal. A file whose actor died on it more than `max_retries` times is recorded as failed.
Every node must have unique-asr installed and see the inputs and `output_dir` at the same paths (a shared
file system: transcripts, journals and commit records are written by the actors).
Ray is an optional extra: `pip install "unique-asr[ray]"`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from unique_asr.corpus.job import Plan, finish
from unique_asr.corpus.plan import CorpusItem
from unique_asr.corpus.state import JobState
from unique_asr.corpus.work import JobSpec, Worker, failed_record
from unique_asr.errors import MissingToolError, UniqueASRError


def _import_ray():
    try:
        import ray
    except ImportError:
        raise MissingToolError('--launcher ray needs Ray: pip install "unique-asr[ray]"') from None
    return ray


class CorpusActor:
    """Ray actor body: one Worker (one model copy). A model that fails to load is reported by `ready`,
    not raised from the constructor, so the driver can stop with its one-line error."""

    def __init__(self, spec: JobSpec, name: str, device: str, threads: int):
        import torch

        torch.set_num_threads(max(1, threads))
        self.error = None
        try:
            self.worker = Worker(spec, name, device)
        except (UniqueASRError, ValueError) as exc:
            self.error = str(exc)

    def ready(self) -> str | None:
        return self.error

    def process(self, item: dict) -> dict:
        return self.worker.process(CorpusItem(**item))


def default_workers(resources: dict, gpus_per_worker: float, cpus_per_worker: float) -> int:
    """As many actors as the cluster's GPUs hold (or, without GPUs, its CPUs)."""
    if resources.get("GPU", 0) and gpus_per_worker > 0:
        return max(1, int(resources["GPU"] // gpus_per_worker))
    return max(1, int(resources.get("CPU", 1) // cpus_per_worker))


def run_ray(spec: JobSpec, job: Plan, results: Path, *, address: str | None, workers: int | None,
            gpus_per_worker: float | None, cpus_per_worker: float, max_retries: int, quiet: bool,
            interval: float) -> int:
    ray = _import_ray()
    local = address in (None, "", "local")
    ray.init(address=None if local else address, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=not quiet)
    try:
        resources = ray.cluster_resources()
        gpus = gpus_per_worker if gpus_per_worker is not None else (1.0 if resources.get("GPU", 0) else 0.0)
        count = workers or default_workers(resources, gpus, cpus_per_worker)
        need_gpu, need_cpu = count * gpus, count * cpus_per_worker
        if need_gpu > resources.get("GPU", 0) or need_cpu > resources.get("CPU", 0):
            raise UniqueASRError(
                f"{count} Ray workers need {need_gpu:g} GPUs and {need_cpu:g} CPUs; the cluster has "
                f"{resources.get('GPU', 0):g} GPUs and {resources.get('CPU', 0):g} CPUs")
        actor_class = ray.remote(CorpusActor)
        device = "cuda" if gpus > 0 else ("cpu" if spec.options.device == "auto" else spec.options.device)
        actors = [actor_class.options(num_gpus=gpus, num_cpus=cpus_per_worker, max_restarts=-1,
                                      max_task_retries=max_retries).remote(spec, f"ray{i}", device,
                                                                           int(cpus_per_worker))
                  for i in range(count)]
        for error in ray.get([a.ready.remote() for a in actors]):
            if error:
                raise UniqueASRError(error)
        _dispatch(ray, actors, spec, job, quiet=quiet, interval=interval)
    finally:
        ray.shutdown()
    return finish(spec, job, results, quiet=quiet).status


def _dispatch(ray, actors, spec: JobSpec, job: Plan, *, quiet: bool, interval: float) -> None:
    """One file in flight per actor; the next pending (longest) file goes to whichever actor finishes."""
    state = JobState(spec.output_dir)
    queue = list(reversed(job.pending))  # pop() takes the longest
    inflight: dict = {}
    progress = job.progress(quiet, interval)

    def submit(actor) -> None:
        if queue:
            item = queue.pop()
            inflight[actor.process.remote(item.to_dict())] = (actor, item)

    try:
        for actor in actors:
            submit(actor)
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=interval)
            for ref in ready:
                actor, item = inflight.pop(ref)
                try:
                    record = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the actor died on this file more than max_retries times
                    cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    record = failed_record(item, f"{item.source}: Ray worker lost ({type(exc).__name__}: {cause})")
                    state.commit(record)
                progress.advance(item.duration or 0.0)
                progress.file_done(record.get("status") == "ok")
                submit(actor)
            if not ready:
                progress.advance(0.0)  # keeps the elapsed time and ETA moving while long files run
    finally:
        progress.close()
