"""Pictures of the committed measurements (no model, no GPU): the figures shown in EVALUATION.md and BENCHMARKS.md.

    python scripts/plot_results.py   # docs/img/{wer_vs_budget,kernel_speedup_vs_context,captured_mass_vs_budget,stats_formats_h100}.png

- WER vs budget: Whisper base, sparse cross-attention sweep on the two long-form dev files (H200), per score and
  page size, with dense as the horizontal line (evaluation/sparse_whisper_base_h200_sweep.json,
  evaluation/base_longform_h200_dense.json).
- Kernel speed-up vs context: the UNIQUE decode step against the best dense arm of the same run, and the byte-floor
  cap, per batch size (benchmarks/kernels_h200.json).
- Captured attention mass vs budget: share of the true softmax mass on the selected pages, per score and page size,
  real Whisper base queries (evaluation/selection_quality.json).
- Page-statistics formats, speed against selection: the UNIQUE step's speed-up with bf16, e4m3 and int8 key means,
  plain and re-ranked (refine 4), at batch 80 (benchmarks/kernels_h100_refine_tc*.json, one H100), against the
  share of bf16 UNIQUE's pages each selects on SmolLM2 (evaluation/selection_quality_llm_refine.json).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STYLE = {"unique": ("tab:red", "o"), "quest": ("tab:blue", "s"), "mean": ("tab:gray", "^"),
         "perdim": ("tab:green", "D"), "oracle": ("black", "x"), "window": ("tab:purple", "v")}
DASH = {8: "-", 16: "--", 32: ":"}


def _load(path: Path):
    return json.loads(path.read_text())


def wer_vs_budget(sweep: Path, dense: Path, out: Path) -> Path:
    rows = _load(sweep)
    dense_wer = {r["run"]["dataset"]: r["wer"] for r in _load(dense) if r["run"]["sparsity"]["mode"] == "dense"}
    datasets = sorted({r["run"]["dataset"] for r in rows})
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.2), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        lines = defaultdict(list)
        for r in rows:
            sp = r["run"]["sparsity"]
            if r["run"]["dataset"] == ds:
                lines[(sp["mode"], sp["page_size"])].append((sp["budget"], 100 * r["wer"]))
        for (mode, page), pts in sorted(lines.items()):
            pts.sort()
            color, marker = STYLE.get(mode, ("tab:orange", "."))
            ax.plot(*zip(*pts), DASH.get(page, "-."), color=color, marker=marker, ms=4, label=f"{mode} S{page}")
        if ds in dense_wer:
            ax.axhline(100 * dense_wer[ds], color="black", lw=1, label="dense")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("budget (encoder frames read per query)")
        ax.set_ylabel("WER %")
        ax.set_title(f"Whisper base, {ds} (H200)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, ncol=2)
    return _save(fig, out)


def kernel_speedup(records: Path, out: Path) -> Path:
    rows = [r for r in _load(records) if r.get("arm") == "unique_step"]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, batch in enumerate(sorted({r["B"] for r in rows})):
        pts = sorted((r["N"], r["speedup_vs_best_dense"], r["speedup_cap"]) for r in rows if r["B"] == batch)
        color = plt.cm.viridis(i / 2.5)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", color=color, label=f"UNIQUE step, batch {batch}")
        if i == 0:  # the cap is the ratio of bytes read, the same at every batch size
            ax.plot([p[0] for p in pts], [p[2] for p in pts], ":", color="black", label="byte-floor cap")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context (tokens)")
    ax.set_ylabel("speed-up vs best dense decode")
    r0 = rows[0]
    ax.set_title(f"Decode attention, H{r0['H']}/Hkv{r0['Hkv']} D{r0['D']}, page {r0['S']}, budget {r0['budget']} (H200)",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out)


def captured_mass(quality: Path, out: Path) -> Path:
    data = _load(quality)
    pages = sorted({r["page_size"] for r in data["records"]})
    fig, axes = plt.subplots(1, len(pages), figsize=(5.5 * len(pages), 4.2), squeeze=False, sharey=True)
    for ax, page in zip(axes[0], pages):
        lines = defaultdict(list)
        for r in data["records"]:
            if r["page_size"] == page:
                lines[r["method"]].append((r["budget"], r["captured_mean"]))
        for method, pts in sorted(lines.items()):
            color, marker = STYLE.get(method, ("tab:orange", "."))
            ax.plot(*zip(*sorted(pts)), "-", color=color, marker=marker, ms=4, label=method)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("budget (frames)")
        ax.set_title(f"page size {page}")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("attention mass on selected pages")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(f"Selection quality, Whisper {data.get('model', '')} cross-attention, real queries", fontsize=10)
    return _save(fig, out)


FORMATS = (("bf16 means", "unique_step", "unique"), ("e4m3", "unique_fp8_step", "unique_fp8"),
           ("int8", "unique_int8_step", "unique_int8"), ("e4m3 + refine 4", "unique_fp8_step_refine", "unique_fp8r"),
           ("int8 + refine 4", "unique_int8_step_refine", "unique_int8r"))


def stats_formats(kernels: list[Path], quality: Path, out: Path, batch: int = 80) -> Path:
    """Speed-up vs agreement with the bf16 selection, one panel per context of the kernel records."""
    steps = {(r["arm"], r["N"]): r["speedup_vs_best_dense"] for path in kernels for r in _load(path)
             if r.get("B") == batch and "speedup_vs_best_dense" in r}
    agree = defaultdict(list)
    for r in _load(quality):
        if "agreement_with_bf16_unique" in r:
            agree[r["method"]].append(r["agreement_with_bf16_unique"])
    agree["unique"] = agree["unique"] or [1.0]
    contexts = sorted({n for _, n in steps})
    fig, axes = plt.subplots(1, len(contexts), figsize=(5.2 * len(contexts), 4.0), squeeze=False, sharey=True)
    for ax, n in zip(axes[0], contexts):
        for i, (label, arm, method) in enumerate(FORMATS):
            if (arm, n) not in steps or not agree.get(method):
                continue
            a = [100 * x for x in agree[method]]
            mean = sum(a) / len(a)
            ax.errorbar(steps[arm, n], mean, yerr=[[mean - min(a)], [max(a) - mean]], fmt="os^Dv"[i], capsize=3,
                        color=plt.cm.tab10(i), label=label)
        ax.set_xlabel(f"UNIQUE step speed-up vs best dense, batch {batch}, {n // 1024}K")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("% of bf16 UNIQUE's pages selected")
    axes[0][-1].legend(fontsize=8, loc="lower left")
    fig.suptitle("Key-mean formats: step speed (one H100) against selection on SmolLM2 (mean; bars: min-max over "
                 f"{len(agree['unique_int8r'])} context, document, page, budget records)", fontsize=10)
    return _save(fig, out)


def _save(fig, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "img")
    p.add_argument("--sweep", type=Path, default=ROOT / "evaluation" / "sparse_whisper_base_h200_sweep.json")
    p.add_argument("--dense", type=Path, default=ROOT / "evaluation" / "base_longform_h200_dense.json")
    p.add_argument("--kernels", type=Path, default=ROOT / "benchmarks" / "kernels_h200.json")
    p.add_argument("--quality", type=Path, default=ROOT / "evaluation" / "selection_quality.json")
    p.add_argument("--formats-kernels", type=Path, nargs="+",
                   default=[ROOT / "benchmarks" / "kernels_h100_refine_tc.json",
                            ROOT / "benchmarks" / "kernels_h100_refine_tc_128k.json"])
    p.add_argument("--formats-quality", type=Path, default=ROOT / "evaluation" / "selection_quality_llm_refine.json")
    args = p.parse_args(argv)
    for path in (wer_vs_budget(args.sweep, args.dense, args.out_dir / "wer_vs_budget.png"),
                 kernel_speedup(args.kernels, args.out_dir / "kernel_speedup_vs_context.png"),
                 captured_mass(args.quality, args.out_dir / "captured_mass_vs_budget.png"),
                 stats_formats(args.formats_kernels, args.formats_quality, args.out_dir / "stats_formats_h100.png")):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
