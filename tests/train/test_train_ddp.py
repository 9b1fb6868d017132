"""torchrun, 2 CPU processes (gloo): scripts/finetune.py completes 2 DDP steps and checkpoints both ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from train_helpers import ROOT

pytestmark = pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs the gloo backend")


def test_torchrun_ddp_two_processes(train_manifest, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(ROOT / "scripts" / "finetune.py"),
        "model=tiny-random",
        "trainer=cpu-smoke",
        "trainer.devices=2",
        "trainer.max_steps=2",
        "trainer.batch_size=1",
        f"data.train={train_manifest}",
        "data.num_workers=0",
        f"paths.runs={tmp_path}",
        "run_name=ddp",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["loss"] > 0 for r in rows)  # rank 0 alone writes
    checkpoint = torch.load(tmp_path / "ddp" / "checkpoints" / "step-0000002.pt", weights_only=False)
    orders = [p["order"] for p in checkpoint["positions"]]
    assert len(orders) == 2 and not set(orders[0]) & set(orders[1])  # each rank its own half of the data
    assert len(checkpoint["rng"]) == 2
