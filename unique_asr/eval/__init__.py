"""Evaluation without the model stack (no torch): normalise, align, score, report, prepare datasets.

WER is always "transcribe to a manifest, then score": scripts/eval_wer.py writes result manifests,
scripts/score_wer.py scores them with one normaliser for both sides and writes the report.
"""

from importlib import import_module

# Names re-exported from the submodules, loaded on first use: `import unique_asr.eval.manifest` (what the
# fine-tuning data path needs) must not import rapidfuzz and whisper_normalizer, which only the [eval] extra
# installs (`pip install unique-asr[train]` has neither).
_EXPORTS = {
    "Alignment": "align", "ErrorCounts": "align", "align": "align",
    "DatasetItem": "manifest", "ManifestWriter": "manifest", "completed": "manifest", "load_dataset": "manifest",
    "make_record": "manifest", "pending": "manifest",
    "CorpusScore": "metrics", "ItemScore": "metrics", "ManifestScore": "metrics", "score_manifest": "metrics",
    "score_record": "metrics",
    "DEFAULT_NORMALISER": "normalise", "NORMALISERS": "normalise", "normalise": "normalise",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"unique_asr.eval.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'unique_asr.eval' has no attribute {name!r}")


__all__ = [
    "DEFAULT_NORMALISER",
    "NORMALISERS",
    "Alignment",
    "CorpusScore",
    "DatasetItem",
    "ErrorCounts",
    "ItemScore",
    "ManifestScore",
    "ManifestWriter",
    "align",
    "completed",
    "load_dataset",
    "make_record",
    "normalise",
    "pending",
    "score_manifest",
    "score_record",
]
