"""Sparsity-aware LoRA fine-tuning of Whisper (Hydra entry point; the recipe lives in unique_asr.train).

    python scripts/finetune.py                                        # conf/finetune.yaml defaults
    python scripts/finetune.py gate=hard sparsity.budget=96 trainer.max_steps=2000
    torchrun --nproc_per_node 2 scripts/finetune.py trainer=ddp       # DDP, one process per GPU
    python scripts/finetune.py model=tiny-random trainer=cpu-smoke    # recipe check on the CPU

Re-running a command resumes from its run folder's newest checkpoint. docs/finetune.md has the details.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import replace

import hydra
import torch.distributed as dist
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

sys.path.insert(
    0, os.path.dirname(os.path.abspath(__file__))
)  # scripts/ is no package: share eval_wer's mapping
from eval_wer import _exact, build_options

from unique_asr.errors import UniqueASRError
from unique_asr.models.whisper import SoftGateConfig
from unique_asr.train.data import DataOptions
from unique_asr.train.loop import TrainerOptions
from unique_asr.train.lora import LoraOptions
from unique_asr.train.run import finetune, pretrained_whisper, random_whisper
from unique_asr.train.schedule import OptimOptions

log = logging.getLogger("finetune")
GROUPS = {
    "data": DataOptions,
    "lora": LoraOptions,
    "optim": OptimOptions,
    "trainer": TrainerOptions,
    "gate": SoftGateConfig,
}


def recipe_options(cfg: DictConfig) -> dict:
    """Keyword arguments of `finetune` from the composed config (group keys == dataclass fields)."""
    c = OmegaConf.to_container(cfg, resolve=True)
    options = {group: cls(**_exact(cls, c[group], group)) for group, cls in GROUPS.items()}
    data = options["data"]
    paths = {k: to_absolute_path(getattr(data, k)) for k in ("train", "eval") if getattr(data, k)}
    return {**options, "data": replace(data, **paths), "eval_options": build_options(cfg)}


@hydra.main(config_path="../conf", config_name="finetune", version_base="1.3")
def main(cfg: DictConfig) -> None:
    if int(os.environ.get("RANK", "0")) != 0:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        options = recipe_options(cfg)
        if "dims" in cfg.model:
            model, tokenizer, tokenizer_json = random_whisper(
                OmegaConf.to_container(cfg.model.dims), cfg.model.tokenizer, options["trainer"].seed
            )
        else:
            model, tokenizer, tokenizer_json = pretrained_whisper(cfg.model.name)
        rows = finetune(
            model,
            tokenizer,
            cfg.model.name,
            out_dir=to_absolute_path(cfg.run_dir),
            tokenizer_json=tokenizer_json,
            **options,
        )
        if rows:
            log.info("done: step %d, loss %.4f", rows[-1]["step"], rows[-1]["loss"])
    except (UniqueASRError, ValueError) as exc:
        log.error("%s", exc)
        raise SystemExit(1) from exc
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
