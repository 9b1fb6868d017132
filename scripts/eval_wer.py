"""Transcribe a dataset manifest into a result manifest (resumable); score it with scripts/score_wer.py.

    python scripts/eval_wer.py                                   # conf/eval.yaml defaults
    python scripts/eval_wer.py model=tiny.en dataset=ljspeech-lj001 sparsity=dense
    python scripts/eval_wer.py -m sparsity=unique sparsity.budget=128,256,512    # Hydra multirun sweep

Each result line records the model, dataset, normaliser and the full transcribe / decode / sparsity
options; re-running one configuration skips the ids its manifest already holds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, fields
from functools import lru_cache
from pathlib import Path

import hydra
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

import unique_asr
from unique_asr.config import DecodeOptions, SparsityConfig, TranscribeOptions
from unique_asr.errors import UniqueASRError
from unique_asr.eval.manifest import ManifestWriter, completed, load_dataset, make_record, pending
from unique_asr.eval.metrics import score_manifest
from unique_asr.eval.normalise import NORMALISERS

log = logging.getLogger("eval_wer")
NESTED = ("decode", "sparsity")


def _exact(cls, values: dict, group: str) -> dict:
    """`values` as constructor arguments of `cls`; lists become tuples. Unknown or missing keys raise."""
    names = {f.name for f in fields(cls)} - set(NESTED)
    unknown, missing = sorted(set(values) - names), sorted(names - set(values))
    if unknown or missing:
        raise ValueError(
            f"config group {group!r} does not match {cls.__name__}: "
            f"unknown keys {unknown}, missing keys {missing}"
        )
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def build_options(cfg: DictConfig) -> TranscribeOptions:
    """TranscribeOptions from the composed config's transcribe / decode / sparsity nodes (keys == fields)."""
    c = OmegaConf.to_container(cfg, resolve=True)
    return TranscribeOptions(
        **_exact(TranscribeOptions, c["transcribe"], "transcribe"),
        decode=DecodeOptions(**_exact(DecodeOptions, c["decode"], "decode")),
        sparsity=SparsityConfig(**_exact(SparsityConfig, c["sparsity"], "sparsity")),
    )


def run_description(cfg: DictConfig, options: TranscribeOptions) -> dict:
    """What a result line records about its run (and what resumption compares)."""
    if cfg.normaliser not in NORMALISERS:
        raise ValueError(f"normaliser {cfg.normaliser!r} is not one of {', '.join(NORMALISERS)}")
    transcribe = {k: v for k, v in asdict(options).items() if k not in NESTED}
    run = {
        "model": cfg.model.name,
        "dataset": cfg.dataset.name,
        "normaliser": cfg.normaliser,
        "transcribe": transcribe,
        "decode": asdict(options.decode),
        "sparsity": asdict(options.sparsity),
    }
    return json.loads(json.dumps(run))


def output_path(cfg: DictConfig, run: dict) -> Path:
    """The configured output, or a name unique to the run: <results>/<dataset>/<model>/<mode>-...-<hash>.jsonl."""
    if cfg.output:
        return Path(to_absolute_path(cfg.output))
    sp = run["sparsity"]
    digest = hashlib.sha1(json.dumps(run, sort_keys=True).encode()).hexdigest()[:8]
    arm = sp["mode"] if sp["mode"] == "dense" else f"{sp['mode']}-S{sp['page_size']}-T{sp['budget']}"
    model = str(run["model"]).replace("/", "--")
    return Path(to_absolute_path(cfg.paths.results)) / str(run["dataset"]) / model / f"{arm}-{digest}.jsonl"


@lru_cache(maxsize=2)
def _model(name: str, device: str, dtype: str, sparsity: SparsityConfig):
    """Loaded once per process and configuration (the attention setting is fixed at load), so jobs of a
    multirun sweep (one process) that share it reuse it."""
    if not hasattr(unique_asr, "load_model"):
        raise UniqueASRError("this unique_asr has no load_model yet: the transcriber is not installed")
    return unique_asr.load_model(name, device=device, dtype=dtype, sparsity=sparsity)


def evaluate(cfg: DictConfig) -> Path:
    """Transcribe the dataset's pending items into the result manifest; returns its path."""
    options = build_options(cfg)
    run = run_description(cfg, options)
    out = output_path(cfg, run)
    items = load_dataset(to_absolute_path(cfg.dataset.manifest), cfg.limit)
    todo = pending(items, completed(out, run))
    log.info("%s: %d of %d items to transcribe -> %s", cfg.dataset.name, len(todo), len(items), out)
    if todo:
        model = _model(cfg.model.name, options.device, options.dtype, options.sparsity)
        with ManifestWriter(out) as writer:
            for item in todo:
                started = time.perf_counter()
                segments, info = model.transcribe(str(item.audio), options)
                segments = list(segments)  # lazy: the wall time includes decoding
                wall = time.perf_counter() - started
                writer.append(make_record(item, segments, info, wall, run))
                log.info(
                    "%s: %.1f s audio in %.1f s (RTFx %.1f)",
                    item.id,
                    item.duration,
                    wall,
                    item.duration / wall if wall > 0 else float("inf"),
                )
    if not out.is_file():
        return out
    corpus = score_manifest(out).corpus
    log.info(
        "WER %.2f %% over %d files (%s), RTFx %.1f",
        100 * corpus.wer,
        corpus.files,
        cfg.normaliser,
        corpus.rtfx,
    )
    return out


@hydra.main(config_path="../conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    except (UniqueASRError, ValueError) as exc:
        log.error("%s", exc)
        raise SystemExit(1) from exc


if __name__ == "__main__":
    main()
