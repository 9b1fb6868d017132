"""Markdown report and PNG plots (WER / RTFx vs budget) over several scored result manifests."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from unique_asr.errors import OutputError
from unique_asr.eval.metrics import CorpusScore, ManifestScore

TOP_CONFUSIONS = 10


def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.2f}"


def _num(x: float, digits: int = 1) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _sparsity(run: dict) -> dict:
    return run.get("sparsity") or {}


def label(score: ManifestScore) -> str:
    """Short name of a run: dataset / model / mode S=page T=budget."""
    sp = _sparsity(score.run)
    mode = sp.get("mode", "?")
    tail = "" if mode == "dense" else f" S={sp.get('page_size')} T={sp.get('budget')}"
    return f"{score.run.get('dataset')} / {score.run.get('model')} / {mode}{tail}"


def _summary_row(score: ManifestScore) -> list[str]:
    c: CorpusScore = score.corpus
    n = c.words.reference_length or 1
    return [
        label(score),
        str(c.files),
        _num(c.duration / 3600, 2),
        _pct(c.wer),
        _pct(c.cer),
        _pct(c.words.substitutions / n),
        _pct(c.words.deletions / n),
        _pct(c.words.insertions / n),
        _pct(c.entity_error_rate),
        str(c.loops),
        str(c.repeated_ngrams),
        _pct(c.coverage),
        _pct(c.decoded_share),
        _num(c.rtfx),
    ]


SUMMARY_HEADER = [
    "run",
    "files",
    "hours",
    "WER %",
    "CER %",
    "sub %",
    "del %",
    "ins %",
    "EER %",
    "loops",
    "rep. n-grams",
    "coverage %",
    "decoded %",
    "RTFx",
]
ITEM_HEADER = [
    "id",
    "ref words",
    "WER %",
    "CER %",
    "S",
    "D",
    "I",
    "EER %",
    "loop",
    "rep. n-grams",
    "len ratio",
    "coverage %",
    "RTFx",
]


def _item_rows(score: ManifestScore) -> list[list[str]]:
    rows = []
    for i in score.items:
        eer = 1 - i.entities_found / i.entities_total if i.entities_total else math.nan
        rows.append(
            [
                i.id,
                str(i.words.reference_length),
                _pct(i.wer),
                _pct(i.cer),
                str(i.words.substitutions),
                str(i.words.deletions),
                str(i.words.insertions),
                _pct(eer),
                "yes" if i.telemetry.loop else "",
                str(i.telemetry.repeated_ngrams),
                _num(i.telemetry.length_ratio, 2),
                _pct(i.coverage),
                _num(i.duration / i.wall_s if i.wall_s > 0 else math.nan),
            ]
        )
    return rows


def _confusion_lines(score: ManifestScore) -> list[str]:
    conf = score.corpus.confusions
    subs = ", ".join(f"{r}→{h} ({n})" for (r, h), n in conf.substitutions.most_common(TOP_CONFUSIONS))
    dels = ", ".join(f"{w} ({n})" for w, n in conf.deletions.most_common(TOP_CONFUSIONS))
    ins = ", ".join(f"{w} ({n})" for w, n in conf.insertions.most_common(TOP_CONFUSIONS))
    return [f"- substitutions: {subs or '-'}", f"- deletions: {dels or '-'}", f"- insertions: {ins or '-'}"]


def plot_vs_budget(scores: Sequence[ManifestScore], metric: str, path: Path) -> Path:
    """Plot `metric` ("wer" or "rtfx") against budget: a line per (dataset, model, mode, page size),
    dense runs as dashed horizontal lines."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series: dict[tuple, list[tuple[int, float]]] = defaultdict(list)
    dense: list[tuple[str, float]] = []
    for s in scores:
        value = s.corpus.wer * 100 if metric == "wer" else s.corpus.rtfx
        sp = _sparsity(s.run)
        if sp.get("mode", "dense") == "dense":
            dense.append((f"{s.run.get('dataset')} / {s.run.get('model')} dense", value))
        else:
            key = (s.run.get("dataset"), s.run.get("model"), sp.get("mode"), sp.get("page_size"))
            series[key].append((int(sp["budget"]), value))
    for (dataset, model, mode, page), points in sorted(series.items(), key=str):
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, marker="o", label=f"{dataset} / {model} / {mode} S={page}")
    for name, value in dense:
        ax.axhline(value, linestyle="--", linewidth=1, color="gray" if len(dense) == 1 else None, label=name)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("budget T (tokens / frames attended per query)")
    ax.set_ylabel("WER (%)" if metric == "wer" else "RTFx (audio s / wall s)")
    ax.grid(True, alpha=0.3)
    if series or dense:
        ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from exc
    finally:
        plt.close(fig)
    return path


def write_report(scores: Sequence[ManifestScore], out_dir: str | Path) -> Path:
    """Write report.md, wer_vs_budget.png and rtfx_vs_budget.png into `out_dir`; returns the report path."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {out_dir}: {exc.strerror}") from exc
    ordered = sorted(scores, key=lambda s: (label(s).split(" / ")[:3], _sparsity(s.run).get("budget") or 0))
    plot_vs_budget(ordered, "wer", out_dir / "wer_vs_budget.png")
    plot_vs_budget(ordered, "rtfx", out_dir / "rtfx_vs_budget.png")
    normalisers = sorted({s.normaliser for s in ordered})
    lines = [
        "# WER report",
        "",
        (
            f"Normaliser (both sides): {', '.join(normalisers)}. Rates pool counts over files. "
            "EER = 1 - recall of listed entity mentions found verbatim in the normalised hypothesis. "
            "Coverage = reference speech time overlapped by hypothesis segments; decoded = seconds the "
            "transcriber decoded / speech it detected. RTFx = audio s / wall s."
        ),
        "",
        *_table(SUMMARY_HEADER, [_summary_row(s) for s in ordered]),
        "",
        "![WER vs budget](wer_vs_budget.png)",
        "",
        "![RTFx vs budget](rtfx_vs_budget.png)",
        "",
    ]
    for s in ordered:
        lines += [
            f"## {label(s)}",
            "",
            f"Manifest: `{s.path}`",
            "",
            f"Sparsity: `{_sparsity(s.run)}`",
            "",
            f"Decode: `{s.run.get('decode')}`",
            "",
            *_confusion_lines(s),
            "",
            *_table(ITEM_HEADER, _item_rows(s)),
            "",
        ]
    path = out_dir / "report.md"
    try:
        path.write_text("\n".join(lines), encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from exc
    return path
