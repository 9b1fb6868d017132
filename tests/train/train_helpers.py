"""Helpers for the fine-tuning tests: a small training manifest made here (espeak-ng speech when it is
installed, else tones) and the tiny random Whisper of conf/model/tiny-random.yaml."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import soundfile as sf
from omegaconf import OmegaConf
from script_loader import load_script

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "tiny-random.yaml"))


def tones_manifest(out: pathlib.Path, n: int) -> pathlib.Path:
    """n recordings of 2-3 tones (one per 'word' segment) with their text, for machines without espeak-ng."""
    rng = np.random.default_rng(0)
    words = ["one", "two", "three", "four", "five", "six"]
    (out / "audio").mkdir(parents=True)
    with open(out / "manifest.jsonl", "w") as f:
        for i in range(n):
            pieces, segments, t = [], [], 0.0
            for j in range(2 + i % 2):
                k = int(rng.integers(len(words)))
                tone = 0.3 * np.sin(2 * np.pi * (200 + 100 * k) * np.arange(8000) / 16000)
                pieces += [np.zeros(3200), tone]
                segments.append({"id": j, "start": t + 0.2, "end": t + 0.7, "text": words[k]})
                t += 0.7
            sf.write(out / "audio" / f"t{i}.flac", np.concatenate(pieces).astype(np.float32), 16000)
            row = {
                "id": f"t{i}",
                "path": f"audio/t{i}.flac",
                "duration": t,
                "text": " ".join(s["text"] for s in segments),
                "segments": segments,
            }
            f.write(json.dumps(row) + "\n")
    return out / "manifest.jsonl"


def synthetic_manifest(out: pathlib.Path, n: int) -> pathlib.Path:
    """n recordings with per-sentence segments: espeak-ng speech (scripts/prepare_synthetic.py) or tones."""
    if shutil.which("espeak-ng") is None:
        return tones_manifest(out, n)
    load_script("prepare_synthetic").main(
        ["--out", str(out), "--recordings", str(n), "--max-sentences", "2", "--format", "opus"]
    )
    return out / "manifest.jsonl"


SMALL = {**TINY["dims"], "n_audio_state": 32, "n_text_state": 32, "n_audio_layer": 1, "n_text_layer": 1}


def run_recipe(
    manifest: pathlib.Path,
    out_dir: pathlib.Path,
    until: int | None = None,
    *,
    gate: str = "soft",
    eval_manifest: pathlib.Path | None = None,
    **trainer,
):
    """finetune() of a fresh small random Whisper (seed 0) with LoRA (dropout on: RNG matters) on the CPU;
    returns (model, metrics of the steps run)."""
    from unique_asr.config import DecodeOptions, TranscribeOptions
    from unique_asr.models.whisper import SoftGateConfig
    from unique_asr.train.data import DataOptions
    from unique_asr.train.loop import TrainerOptions
    from unique_asr.train.lora import LoraOptions
    from unique_asr.train.run import finetune, random_whisper
    from unique_asr.train.schedule import OptimOptions

    model, tokenizer, tokenizer_json = random_whisper(SMALL, "tiny.en", 0)
    options = {"max_steps": 4, "batch_size": 2, "save_every": 2, "device": "cpu", "log_every": 1, **trainer}
    rows = finetune(
        model,
        tokenizer,
        "small-random",
        data=DataOptions(train=str(manifest), eval=eval_manifest and str(eval_manifest), eval_limit=1),
        lora=LoraOptions(r=8, dropout=0.1),
        optim=OptimOptions(lr=1e-2, warmup_steps=1),
        trainer=TrainerOptions(**options),
        gate=SoftGateConfig(mode=gate, page_size=16, budget=96),
        eval_options=TranscribeOptions(
            vad=False, decode=DecodeOptions(max_new_tokens=6, temperatures=(0.0,))
        ),
        out_dir=out_dir,
        until=until,
        tokenizer_json=tokenizer_json,
    )
    return model, rows
