"""Checkpoints with exact resume: trainable weights, optimizer, scheduler, data position and every RNG state.

One file per save, `<dir>/step-XXXXXXX.pt`, written to a temporary name then renamed (a crash never leaves
a torn checkpoint). RNG states are gathered from every rank (rank r restores entry r); only rank 0 writes.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

NAME = re.compile(r"step-(\d{7})\.pt$")
WRAPPED = "_checkpoint_wrapped_module."  # torch's activation-checkpoint wrapper, absent from state_dict()


@dataclass
class Position:
    """Where training stands: optimizer steps done, the epoch, batches of it consumed (per rank), and this
    rank's sample order of the epoch (checked on resume: a changed dataset or seed must not pass silently)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    order: list[int] = field(default_factory=list)


def rng_state() -> dict:
    """python / numpy / torch (and CUDA, when present) generator states of this process."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _trainable_names(model: nn.Module) -> set[str]:
    """state_dict() names of the parameters that train (activation-checkpoint wrappers leave no trace)."""
    return {n.replace(WRAPPED, "") for n, p in model.named_parameters() if p.requires_grad}


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train (LoRA adapters, or everything when fine-tuning fully), detached on CPU."""
    names = _trainable_names(model)
    return {n: t.detach().cpu().clone() for n, t in model.state_dict().items() if n in names}


def _gather(obj) -> list:
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def save_checkpoint(
    directory: str | Path,
    model: nn.Module,
    optimizer,
    scheduler,
    position: Position,
    extra: dict | None = None,
) -> Path:
    """Collective (every rank calls it): gathers positions and RNG states, rank 0 writes, all wait."""
    path = Path(directory) / f"step-{position.step:07d}.pt"
    positions, rngs = _gather(asdict(position)), _gather(rng_state())
    if not dist.is_initialized() or dist.get_rank() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "model": trainable_state(model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "positions": positions,
            "rng": rngs,
            "extra": extra or {},
        }
        tmp = path.with_name(path.name + ".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)
    _barrier()
    return path


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint with the highest step in `directory` (None when there is none)."""
    found = (
        [p for p in Path(directory).glob("step-*.pt") if NAME.search(p.name)]
        if Path(directory).is_dir()
        else []
    )
    return max(found, key=lambda p: int(NAME.search(p.name).group(1)), default=None)


def load_checkpoint(
    path: str | Path, model: nn.Module, optimizer, scheduler, rank: int = 0
) -> tuple[Position, dict]:
    """Restore weights, optimizer, scheduler and this rank's RNG states -> (this rank's Position, extra).

    Raises ValueError when the checkpoint's trainable weights do not match the model's (other LoRA setup)
    or it was written by a different number of ranks.
    """
    payload = torch.load(path, map_location="cpu", weights_only=False)
    expected = _trainable_names(model)
    if set(payload["model"]) != expected:
        diff = sorted(set(payload["model"]) ^ expected)[:5]
        raise ValueError(f"{path}: trainable parameters differ from the model's (e.g. {diff})")
    world = dist.get_world_size() if dist.is_initialized() else 1
    if len(payload["positions"]) != world:
        raise ValueError(f"{path}: written by {len(payload['positions'])} ranks, resuming with {world}")
    model.load_state_dict(payload["model"], strict=False)
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    set_rng_state(payload["rng"][rank])
    return Position(**payload["positions"][rank]), payload["extra"]
