"""Helpers for the fine-tuning tests: a small training manifest of recorded speech (tests/data/speech) and the
tiny random Whisper of conf/model/tiny-random.yaml."""

from __future__ import annotations

import json
import pathlib

import soundfile as sf
import speech_data
from omegaconf import OmegaConf

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "tiny-random.yaml"))


def speech_manifest(out: pathlib.Path, n: int) -> pathlib.Path:
    """n recordings of two recorded utterances each (tests/data/speech, 0.4 s apart), with one segment per
    utterance (word-aligned start/end) and their text: the manifest format of scripts/prepare_data.py."""
    (out / "audio").mkdir(parents=True)
    with open(out / "manifest.jsonl", "w") as f:
        for i in range(n):
            names = [speech_data.AUSTEN[i % 5], speech_data.AUSTEN[(i + 2) % 5]]
            audio, utterances = speech_data.joined(names, gap_s=0.4, lead_s=0.2)
            sf.write(out / "audio" / f"s{i}.flac", audio, speech_data.SAMPLE_RATE)
            segments = [
                {"id": j, "start": round(u.words[0]["start"], 3), "end": round(u.words[-1]["end"], 3), "text": u.text}
                for j, u in enumerate(utterances)
            ]
            row = {
                "id": f"s{i}",
                "path": f"audio/s{i}.flac",
                "duration": len(audio) / speech_data.SAMPLE_RATE,
                "text": " ".join(u.text for u in utterances),
                "segments": segments,
            }
            f.write(json.dumps(row) + "\n")
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
