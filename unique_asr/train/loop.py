"""The training loop: teacher-forced cross-entropy, gradient accumulation and clipping, bf16 autocast on CUDA,
optional activation checkpointing, periodic evaluation, checkpoints with exact resume, metrics logging.

Works unchanged in one process or under torchrun (DDP): gradients sync on the last micro-batch of a step,
only rank 0 logs, evaluates and writes; every rank takes part in saves (RNG states are gathered).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from unique_asr.errors import MissingToolError
from unique_asr.models.whisper import SoftGateConfig, WhisperModel
from unique_asr.train.data import IGNORE, Batch, ResumableSampler
from unique_asr.train.state import Position, latest_checkpoint, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class TrainerOptions:
    """max_steps: optimizer steps of the schedule; batch_size: windows per rank and micro-batch;
    grad_accum: micro-batches per step; clip_norm: global gradient-norm bound (<= 0: off);
    precision: "auto" (bf16 autocast on CUDA, fp32 on CPU) | "bf16" | "fp32"; grad_checkpointing:
    recompute encoder blocks in backward; log_every / eval_every / save_every: steps (0: never);
    devices: processes expected (torchrun --nproc_per_node; checked); backend: "auto" (nccl on CUDA, gloo
    on CPU) | "nccl" | "gloo"; device: "auto" | "cpu" | "cuda"; resume: continue from the newest checkpoint
    of the run folder; tensorboard: also write TensorBoard scalars (needs the tensorboard package)."""

    max_steps: int = 1000
    batch_size: int = 8
    grad_accum: int = 1
    clip_norm: float = 1.0
    precision: str = "auto"
    grad_checkpointing: bool = False
    log_every: int = 10
    eval_every: int = 0
    save_every: int = 200
    seed: int = 0
    devices: int = 1
    backend: str = "auto"
    device: str = "auto"
    resume: bool = True
    tensorboard: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.max_steps < 1 or self.batch_size < 1 or self.grad_accum < 1 or self.devices < 1:
            raise ValueError("max_steps, batch_size, grad_accum and devices must be >= 1")


class TeacherForced(nn.Module):
    """What DDP wraps: mel [B, n_mels, 3000], tokens int64 [B, T] -> logits float32 [B, T, V] through
    `WhisperModel.forward_train` with the cross-attention `gate` (dense, soft gate or hard mask)."""

    def __init__(self, model: WhisperModel, gate: SoftGateConfig):
        super().__init__()
        self.model, self.gate = model, gate

    def forward(self, mel: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.forward_train(mel, tokens, self.gate)


def enable_gradient_checkpointing(model: WhisperModel) -> None:
    """Recompute each encoder block in backward instead of keeping its activations (1500 frames per window
    dominate activation memory; decoder blocks see <= 448 tokens and stay as they are). Parameter names
    in state_dict() are unchanged."""
    blocks = tuple(model.encoder.blocks)
    apply_activation_checkpointing(model, check_fn=lambda m: any(m is b for b in blocks))


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over labelled positions: logits [B, T, V], labels int64 [B, T] (IGNORE skipped)."""
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE)


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


class MetricsLog:
    """Rank 0's metrics: a JSONL file (one object per record), the console every `every` steps, and
    TensorBoard scalars when asked."""

    def __init__(self, path: Path, every: int, tensorboard: bool):
        self.path, self.every, self.writer = path, every, None
        if _rank() != 0:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise MissingToolError("trainer.tensorboard=true needs the tensorboard package") from exc
            self.writer = SummaryWriter(str(path.parent / "tensorboard"))

    def write(self, row: dict) -> None:
        if _rank() != 0:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, row["step"])
        if "wer" in row or (self.every and row["step"] % self.every == 0):
            log.info(
                "step %d: %s", row["step"], ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "step")
            )


class Trainer:
    """Runs optimizer steps over `loader` (whose sampler is a ResumableSampler) until options.max_steps.

    module: TeacherForced, or DistributedDataParallel around one. evaluate(model, step) -> dict of scores
    (e.g. {"wer": ...}) runs on rank 0 every eval_every steps. out_dir gets checkpoints/ and metrics.jsonl.
    """

    def __init__(
        self,
        module: nn.Module,
        optimizer,
        scheduler,
        loader: DataLoader,
        options: TrainerOptions,
        out_dir: str | Path,
        device: torch.device,
        evaluate: Callable[[nn.Module, int], dict] | None = None,
    ):
        self.module, self.optimizer, self.scheduler, self.loader = module, optimizer, scheduler, loader
        self.options, self.device, self.evaluate = options, device, evaluate
        self.out_dir = Path(out_dir)
        self.sampler: ResumableSampler = loader.sampler
        self.position = Position(order=self._order(0))
        self.metrics = MetricsLog(self.out_dir / "metrics.jsonl", options.log_every, options.tensorboard)
        bf16 = options.precision == "bf16" or (options.precision == "auto" and device.type == "cuda")
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

    @property
    def model(self) -> nn.Module:
        """The TeacherForced module without the DDP wrapper."""
        return self.module.module if isinstance(self.module, DistributedDataParallel) else self.module

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    def _order(self, epoch: int) -> list[int]:
        self.sampler.set_position(epoch, 0)
        return self.sampler.order()

    def resume(self, path: str | Path | None = None) -> bool:
        """Load `path` (default: the newest checkpoint of the run); False when there is none."""
        path = path or latest_checkpoint(self.checkpoint_dir)
        if path is None:
            return False
        position, _ = load_checkpoint(path, self.model, self.optimizer, self.scheduler, _rank())
        if self._order(position.epoch) != position.order:
            raise ValueError(
                f"{path}: the data order differs from the checkpoint's (dataset, seed or ranks changed)"
            )
        self.position = position
        log.info(
            "resumed from %s at step %d (epoch %d, batch %d)",
            path,
            position.step,
            position.epoch,
            position.batch_in_epoch,
        )
        return True

    def _batches(self) -> Iterator[Batch]:
        """Batches from the current position on, across epochs; the position advances as they are taken."""
        pos = self.position
        while True:
            self.sampler.set_position(pos.epoch, pos.batch_in_epoch * self.options.batch_size)
            for batch in self.loader:
                pos.batch_in_epoch += 1
                yield batch
            pos.epoch, pos.batch_in_epoch = pos.epoch + 1, 0
            pos.order = self._order(pos.epoch)

    def _step(self, batches: Iterator[Batch]) -> dict:
        """One optimizer step over grad_accum micro-batches; returns the step's metrics."""
        o, loss_sum, tokens = self.options, torch.zeros((), device=self.device), 0
        for micro in range(o.grad_accum):
            batch = next(batches).to(self.device)
            last = micro == o.grad_accum - 1
            sync = (
                nullcontext()
                if last or not isinstance(self.module, DistributedDataParallel)
                else self.module.no_sync()
            )
            with sync:
                with self.autocast:
                    logits = self.module(batch.mel, batch.tokens)
                loss = token_loss(logits, batch.labels)
                (loss / o.grad_accum).backward()
            loss_sum += loss.detach() / o.grad_accum
            tokens += int((batch.labels != IGNORE).sum())
        params = [p for p in self.model.parameters() if p.requires_grad]
        norm = torch.nn.utils.clip_grad_norm_(params, o.clip_norm if o.clip_norm > 0 else math.inf)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if dist.is_initialized():
            dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
        return {"loss": float(loss_sum), "lr": lr, "grad_norm": float(norm), "tokens": tokens}

    def _evaluate(self, step: int) -> None:
        if _rank() == 0:
            self.model.eval()
            with torch.no_grad():
                scores = self.evaluate(self.model.model, step)
            self.model.train()
            self.metrics.write({"step": step, **scores})
        if dist.is_initialized():
            dist.barrier()

    def save(self) -> Path:
        return save_checkpoint(self.checkpoint_dir, self.model, self.optimizer, self.scheduler, self.position)

    def fit(self, until: int | None = None) -> list[dict]:
        """Train from the current position to step `until` (default max_steps); returns the steps' metrics."""
        o, rows = self.options, []
        until = min(until or o.max_steps, o.max_steps)
        self.module.train()
        batches = self._batches()
        while self.position.step < until:
            started = time.perf_counter()
            row = self._step(batches)
            self.position.step += 1
            step = self.position.step
            row = {"step": step, **row, "step_s": time.perf_counter() - started}
            rows.append(row)
            self.metrics.write(row)
            if o.save_every and (step % o.save_every == 0 or step == until):
                self.save()
            if (
                self.evaluate is not None
                and o.eval_every
                and (step % o.eval_every == 0 or step == o.max_steps)
            ):
                self._evaluate(step)
        return rows
