"""Evaluation without the model stack (no torch): normalise, align, score, report, prepare datasets.

WER is always "transcribe to a manifest, then score": scripts/eval_wer.py writes result manifests,
scripts/score_wer.py scores them with one normaliser for both sides and writes the report.
"""

from unique_asr.eval.align import Alignment, ErrorCounts, align
from unique_asr.eval.manifest import (
    DatasetItem,
    ManifestWriter,
    completed,
    load_dataset,
    make_record,
    pending,
)
from unique_asr.eval.metrics import CorpusScore, ItemScore, ManifestScore, score_manifest, score_record
from unique_asr.eval.normalise import DEFAULT_NORMALISER, NORMALISERS, normalise

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
