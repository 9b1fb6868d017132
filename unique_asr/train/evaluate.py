"""Periodic WER during fine-tuning, the project's one way: transcribe a dataset manifest into a result
manifest (`unique_asr.eval.manifest`), then score it (`unique_asr.eval.metrics.score_manifest`).

The model under training is transcribed as is (LoRA adapters active, eval mode), with the sparsity of the
eval arm, so the scores are those `scripts/eval_wer.py` would give the same weights.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from unique_asr.config import TranscribeOptions
from unique_asr.errors import MissingToolError
from unique_asr.eval.manifest import ManifestWriter, load_dataset, make_record
from unique_asr.models.whisper import WhisperModel
from unique_asr.transcribe import ModelBundle, transcribe
from unique_asr.vad import VadModel


class WerEvaluator:
    """evaluator(model, step) -> {"wer", "cer", "eval_s"}; each call writes <out_dir>/step-XXXXXXX.jsonl.

    manifest: a dataset manifest; limit: its first n items; name: the model's label in the result lines.
    """

    def __init__(
        self,
        manifest: str | Path,
        tokenizer,
        name: str,
        options: TranscribeOptions,
        out_dir: str | Path,
        limit: int | None = None,
        normaliser: str = "whisper_english",
    ):
        try:  # scoring needs the [eval] extra (rapidfuzz, whisper-normalizer); [train] alone can train without it
            from unique_asr.eval.metrics import score_manifest
            from unique_asr.eval.normalise import NORMALISERS
        except ImportError as exc:
            raise MissingToolError(f"periodic WER needs the eval extra ({exc.name} is not installed): "
                                   "pip install 'unique-asr[eval]', or turn the evaluation off") from None
        self._score_manifest = score_manifest
        if normaliser not in NORMALISERS:
            raise ValueError(f"normaliser {normaliser!r} is not one of {', '.join(NORMALISERS)}")
        self.items = load_dataset(manifest, limit)
        self.tokenizer, self.name, self.options = tokenizer, name, options
        self.out_dir, self.normaliser = Path(out_dir), normaliser
        self.dataset = Path(manifest).parent.name
        self.vad: VadModel | None = None  # loaded on the model's device at the first call

    def run_description(self, step: int) -> dict:
        """What each result line records about the run (the fields `scripts/eval_wer.py` writes)."""
        transcribe_options = {
            k: v for k, v in asdict(self.options).items() if k not in ("decode", "sparsity")
        }
        return {
            "model": f"{self.name}@step{step}",
            "dataset": self.dataset,
            "normaliser": self.normaliser,
            "transcribe": transcribe_options,
            "decode": asdict(self.options.decode),
            "sparsity": asdict(self.options.sparsity),
        }

    def __call__(self, model: WhisperModel, step: int) -> dict:
        started = time.perf_counter()
        sparsity = self.options.sparsity
        if self.options.vad and self.vad is None:
            self.vad = VadModel(next(model.parameters()).device)
        bundle = ModelBundle(model.with_sparsity(sparsity), self.tokenizer, self.name, sparsity, self.vad)
        out, run = self.out_dir / f"step-{step:07d}.jsonl", self.run_description(step)
        out.unlink(missing_ok=True)
        with ManifestWriter(out) as writer:
            for item in self.items:
                t0 = time.perf_counter()
                segments, info = transcribe(bundle, str(item.audio), self.options)
                segments = list(segments)
                writer.append(make_record(item, segments, info, time.perf_counter() - t0, run))
        corpus = self._score_manifest(out, self.normaliser).corpus
        return {"wer": corpus.wer, "cer": corpus.cer, "eval_s": time.perf_counter() - started}
