"""A corpus job under torchrun: one rank per GPU (or per CPU process), each with its own model copy.

    torchrun --nproc_per_node 8 -m unique_asr.corpus talks/ --output_dir out --model base

Rank 0 plans (what is left, from the job folder) and publishes the shards through torchrun's key-value
store (`torch.distributed.rendezvous("env://")`: no process group, no collective that could time out while
a rank is busy for hours); every rank transcribes its shard and adds to shared counters; rank 0 shows the
progress line, waits until every rank is finished and writes the merged result manifest.

Shards are the longest-processing-time split of the pending items (plan.assign), so they are a pure function
of the job folder's state at start: a restart (`torchrun --max-restarts`, or running the command again)
plans again over what is left. Store keys carry torchrun's restart count, so a restarted worker group
never reads the previous group's plan or counters.
"""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path

from unique_asr.corpus.job import Plan, finish
from unique_asr.corpus.plan import CorpusItem, assign
from unique_asr.corpus.progress import Poller
from unique_asr.corpus.work import JobSpec, Worker, pick_device
from unique_asr.errors import UniqueASRError

# How long a rank waits for rank 0's plan (listing and probing a large folder takes a while).
PLAN_TIMEOUT = timedelta(hours=2)


def under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or ("WORLD_SIZE" in os.environ and "RANK" in os.environ)


def run_torchrun(spec: JobSpec, make_plan, results: Path, *, quiet: bool, interval: float) -> int:
    """Run this rank's part; returns the exit status (rank 0: of the whole job; others: 0)."""
    import torch.distributed as dist

    store, rank, world = next(dist.rendezvous("env://", timeout=PLAN_TIMEOUT))
    store = dist.PrefixStore(f"unique_asr.corpus/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/", store)
    local_rank = int(os.environ.get("LOCAL_RANK", rank))

    def advance(seconds: float) -> None:
        store.add("audio_ms", int(round(seconds * 1000)))

    worker = Worker(spec, f"rank{rank}", pick_device(spec.options.device, local_rank), advance)
    job: Plan | None = None
    if rank == 0:
        try:
            job = make_plan()
        except UniqueASRError as exc:
            store.set("plan", json.dumps({"error": str(exc)}))
            raise
        shards = assign(job.pending, world)
        store.set("plan", json.dumps({"shards": [[item.to_dict() for item in shard] for shard in shards]}))
    message = json.loads(store.get("plan"))
    if "error" in message:
        return 1  # rank 0 reports it
    shard = [CorpusItem(**row) for row in message["shards"][rank]]

    progress = poller = None
    if rank == 0:
        progress = job.progress(quiet, interval)

        def tick() -> None:
            progress.update(job.done_s + store.add("audio_ms", 0) / 1000,
                            job.done_files + store.add("files", 0), job.failed + store.add("failed", 0))

        poller = Poller(tick, interval)
    try:
        for item in shard:
            record = worker.process(item)
            store.add("files", 1)
            if record.get("status") != "ok":
                store.add("failed", 1)
        store.add("finished", 1)
        if rank != 0:
            return 0
        while store.add("finished", 0) < world:
            time.sleep(min(interval, 1.0))
        tick()
    finally:
        if poller is not None:
            poller.stop()
            progress.close()
    # Files that failed are in the results; a non-zero exit would only make torchrun restart the worker
    # group (--max-restarts) to find nothing left to do. Non-zero: files are still pending.
    return 1 if finish(spec, job, results, quiet=quiet).pending else 0
