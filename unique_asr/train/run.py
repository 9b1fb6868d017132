"""The fine-tuning recipe assembled from its option dataclasses (scripts/finetune.py maps Hydra onto these).

One process or torchrun: `setup_distributed` reads torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK) and
joins the process group; `finetune` wires model + LoRA + data + optimizer + evaluator into a Trainer, resumes
from the run folder's newest checkpoint when there is one, and trains. DDP only: Whisper (base: 74 M
parameters, large-v3: 1.55 B) fits one GPU with its optimizer state, so FSDP buys nothing here.
"""

from __future__ import annotations

import logging
import os
import random
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from unique_asr.config import TranscribeOptions
from unique_asr.models.checkpoint import verified_path
from unique_asr.models.loader import load_whisper
from unique_asr.models.registry import BUNDLED
from unique_asr.models.tokenizer import WhisperTokenizer
from unique_asr.models.whisper import SoftGateConfig, WhisperConfig, WhisperModel
from unique_asr.train.data import Collator, DataOptions, ResumableSampler, WindowDataset, load_windows
from unique_asr.train.evaluate import WerEvaluator
from unique_asr.train.export import export_whisper
from unique_asr.train.loop import TeacherForced, Trainer, TrainerOptions, enable_gradient_checkpointing
from unique_asr.train.lora import LoraOptions, apply_lora
from unique_asr.train.schedule import OptimOptions, build_optimizer

log = logging.getLogger(__name__)
EVAL_WAIT = timedelta(hours=1)  # collectives time out after this: other ranks wait for rank 0's evaluation


def setup_distributed(options: TrainerOptions) -> tuple[torch.device, int, int]:
    """(device, rank, world size) of this process; joins the process group when torchrun started several.

    Raises ValueError when the number of processes differs from options.devices.
    """
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if world != options.devices:
        raise ValueError(
            f"trainer.devices={options.devices} but {world} process(es) run; "
            f"launch with torchrun --nproc_per_node {options.devices}"
        )
    cuda = options.device == "cuda" or (options.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        backend = options.backend if options.backend != "auto" else ("nccl" if cuda else "gloo")
        dist.init_process_group(backend, timeout=EVAL_WAIT, device_id=device if cuda else None)
    return device, rank, world


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def random_whisper(dims: dict, tokenizer_of: str, seed: int) -> tuple[WhisperModel, WhisperTokenizer, str]:
    """A randomly initialised Whisper of shape `dims` (WhisperConfig fields) with the tokenizer of the
    bundled model `tokenizer_of` (its n_vocab must match): for smoke tests and recipe checks, no weights.
    Returns (model, tokenizer, path of its tokenizer.json)."""
    config = WhisperConfig(**dims)
    seed_everything(seed)
    model = WhisperModel(config)
    with torch.no_grad():
        for emb in (model.decoder.tok_emb.weight, model.decoder.pos_emb, model.encoder.pos_emb):
            emb.normal_(0.0, 0.02)
    tokenizer_json = verified_path(BUNDLED[tokenizer_of].tokenizer)
    return model, WhisperTokenizer(tokenizer_json, config.n_vocab), tokenizer_json


def pretrained_whisper(name: str) -> tuple[WhisperModel, WhisperTokenizer, str]:
    """A bundled name, local folder or hub id, loaded in float32 (master weights; bf16 comes from autocast).
    Returns (model, tokenizer, path of its tokenizer.json)."""
    model, tokenizer, info = load_whisper(name, device="cpu", dtype=torch.float32)
    if info.source == "bundled":
        tokenizer_json = verified_path(BUNDLED[info.name].tokenizer)
    else:
        tokenizer_json = os.path.join(info.weights, "tokenizer.json")  # weights: the model folder
    return model, tokenizer, tokenizer_json


def _loader(
    data: DataOptions, trainer: TrainerOptions, tokenizer, n_mels: int, rank: int, world: int
) -> DataLoader:
    dataset = WindowDataset(load_windows(data.train, data.max_window_s))
    if len(dataset) < world * trainer.batch_size:
        raise ValueError(f"{data.train}: {len(dataset)} windows, fewer than one batch per rank")
    sampler = ResumableSampler(dataset, world, rank, seed=trainer.seed)
    collate = Collator(tokenizer, n_mels, data.language, data.timestamps)
    # its own generator: creating an iterator each epoch must not draw from the global RNG (exact resume)
    generator = torch.Generator().manual_seed(trainer.seed)
    return DataLoader(
        dataset,
        batch_size=trainer.batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=data.num_workers,
        drop_last=True,
        persistent_workers=data.num_workers > 0,
        generator=generator,
    )


def finetune(
    model: WhisperModel,
    tokenizer,
    name: str,
    *,
    data: DataOptions,
    lora: LoraOptions,
    optim: OptimOptions,
    trainer: TrainerOptions,
    gate: SoftGateConfig,
    eval_options: TranscribeOptions,
    out_dir: str | Path,
    until: int | None = None,
    tokenizer_json: str | None = None,
) -> list[dict]:
    """Fine-tune `model` in place (LoRA injected into it) and return the metrics of the steps run here.
    When the run reaches trainer.max_steps and tokenizer_json is given, rank 0 exports the merged model to
    out_dir/final (a Whisper folder `load_model` reads).

    gate: cross-attention of the training forward (none | soft | hard); eval_options: how periodic
    evaluation transcribes (its sparsity is the arm scored). until: stop after that step (the schedule still
    spans trainer.max_steps), as if interrupted. Resumes from out_dir/checkpoints when trainer.resume.
    """
    device, rank, world = setup_distributed(trainer)
    seed_everything(trainer.seed)  # the same LoRA init on every rank (DDP also broadcasts rank 0's)
    apply_lora(model, lora)
    if trainer.grad_checkpointing:
        enable_gradient_checkpointing(model)
    model.to(device)
    module = TeacherForced(model, gate)
    if world > 1:
        module = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
    seed_everything(trainer.seed + rank)  # per-rank dropout streams
    loader = _loader(data, trainer, tokenizer, model.config.n_mels, rank, world)
    optimizer, scheduler = build_optimizer(model, optim, trainer.max_steps)
    evaluate = None
    if data.eval and trainer.eval_every:  # every rank holds it (they wait for rank 0's evaluation)
        evaluate = WerEvaluator(
            data.eval, tokenizer, name, eval_options, Path(out_dir) / "eval", data.eval_limit
        )
    runner = Trainer(module, optimizer, scheduler, loader, trainer, out_dir, device, evaluate)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info(
        "%s: %d windows, %d trainable parameters, gate %s, %d process(es) on %s",
        name,
        len(loader.dataset),
        trainable,
        gate.mode,
        world,
        device,
    )
    if trainer.resume:
        runner.resume()
    rows = runner.fit(until)
    if tokenizer_json and rank == 0 and runner.position.step == trainer.max_steps:
        log.info("merged model -> %s", export_whisper(model, tokenizer_json, Path(out_dir) / "final"))
    return rows
