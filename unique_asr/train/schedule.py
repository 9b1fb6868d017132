"""AdamW over the trainable parameters (no weight decay on biases, norms and embeddings) and a warm-up +
cosine / linear / constant learning-rate schedule as a LambdaLR (its state_dict resumes exactly)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

DECAYS = ("cosine", "linear", "constant")


@dataclass(frozen=True)
class OptimOptions:
    """lr: peak learning rate; warmup_steps: linear ramp from 0; decay: shape after warm-up down to
    min_lr_ratio·lr at the last step; weight_decay applies to matrices only."""

    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 50
    decay: str = "cosine"
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.decay not in DECAYS:
            raise ValueError(f"decay must be one of {', '.join(DECAYS)}, got {self.decay!r}")
        if self.lr <= 0 or self.warmup_steps < 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("need lr > 0, warmup_steps >= 0 and 0 <= min_lr_ratio <= 1")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split into a decayed group (matrices) and an undecayed one (biases, norms,
    embeddings)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        embedding = name.endswith(("_emb", "_emb.weight"))
        (decay if p.dim() >= 2 and not embedding else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(step: int, total_steps: int, options: OptimOptions) -> float:
    """Multiplier of the peak lr before optimizer step `step` (0-based) of `total_steps`."""
    if step < options.warmup_steps:
        return (step + 1) / options.warmup_steps
    if options.decay == "constant":
        return 1.0
    span = max(1, total_steps - options.warmup_steps)
    progress = min(1.0, (step - options.warmup_steps) / span)
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if options.decay == "cosine" else 1.0 - progress
    return options.min_lr_ratio + (1.0 - options.min_lr_ratio) * shape


def build_optimizer(
    model: nn.Module, options: OptimOptions, total_steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the model's trainable parameters and its schedule (call scheduler.step() after each
    optimizer step)."""
    groups = [g for g in param_groups(model, options.weight_decay) if g["params"]]
    if not groups:
        raise ValueError("the model has no trainable parameters")
    fused = all(p.is_cuda for g in groups for p in g["params"])
    optimizer = torch.optim.AdamW(
        groups, lr=options.lr, betas=tuple(options.betas), eps=options.eps, fused=fused or None
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, options)
    )
    return optimizer, scheduler
