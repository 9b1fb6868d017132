"""Run the page selection a few times at one shape, for Nsight Compute to catch its kernels.

bench_kernels.py and sweep_launch.py say how long score + top-k takes; this script only makes the calls, so a
profiler can say why (achieved occupancy, stall reasons, DRAM throughput per kernel). Same random state as the
benches (bench_kernels.build_state); the launch config is the default unless --set gives SelectConfig fields.

    ncu --clock-control none -k regex:"_score_kernel|_select_kernel|_filter_kernel|_merge_kernel" \
        --launch-skip 4 --launch-count 2 \
        --section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats \
        python scripts/profile_select.py --batch 80 --tokens 32768 --code int8
    bash scripts/device/ncu_select.sh     # the shapes the issues time, a table of the main metrics
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from launch_configs import add_decode_shape, one_config  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=80)
    p.add_argument("--tokens", type=int, default=32768)
    add_decode_shape(p)
    p.add_argument("--code", default="bf16", help="key means: bf16 (the pool dtype) or a one-byte code (fp8, int8)")
    p.add_argument("--calls", type=int, default=3, help="select_pages calls (the first compiles)")
    p.add_argument("--score-only", action="store_true", help="score_pages (the scoring pass alone)")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=V", help="SelectConfig fields (one value each)")
    p.add_argument("--summarize", nargs="+", type=Path, metavar="CSV",
                   help="print the main metrics of `ncu --csv --page raw` files (no GPU) and exit")
    return p.parse_args(argv)


# (column of `ncu --page raw`, label, scale): what says whether a kernel waits on memory, on latency or on issue
METRICS = (("gpu__time_duration.sum", "us", 1e-3),
           ("dram__bytes.sum.per_second", "DRAM GB/s", 1e-9),
           ("dram__cycles_active.avg.pct_of_peak_sustained_elapsed", "DRAM active %", 1),
           ("launch__registers_per_thread", "regs", 1),
           ("sm__maximum_warps_per_active_cycle_pct", "theor. occ %", 1),
           ("sm__warps_active.avg.pct_of_peak_sustained_active", "achieved occ %", 1),
           ("sm__issue_active.avg.pct_of_peak_sustained_elapsed", "issue active %", 1),
           ("inst_executed", "M instr", 1e-6))
STALL = "smsp__average_warps_issue_stalled_"


def read_ncu_csv(path: Path) -> list[dict]:
    """Rows (one per profiled kernel, metric name -> value) of an `ncu --csv` file: `--page raw` (one column per
    metric, a units row under the header) or the long form of `--page details` / `--metrics` (one row per
    metric: "Metric Name", "Metric Value"), pivoted by kernel ID. Lines before the header are skipped."""
    import csv

    lines = path.read_text(errors="replace").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID"')), None)
    if start is None:
        return []
    rows = list(csv.DictReader(lines[start:]))
    if rows and "Metric Name" in rows[0]:
        kernels: dict[str, dict] = {}
        for r in rows:
            k = kernels.setdefault(r["ID"], {"ID": r["ID"], "Kernel Name": r["Kernel Name"]})
            k[r["Metric Name"]] = r["Metric Value"]
        return list(kernels.values())
    return rows[1:] if rows and rows[0].get("ID", "") == "" else rows  # the units row


def summarize(paths: list[Path]) -> str:
    """One line per kernel: the METRICS and the three largest stall reasons (warps stalled per issue)."""
    out = ["| file | kernel | " + " | ".join(label for _, label, _ in METRICS) + " | top stalls |",
           "|---|---|" + "---|" * len(METRICS) + "---|"]
    for path in paths:
        for row in read_ncu_csv(path):
            vals = []
            for col, _, scale in METRICS:
                try:
                    vals.append(f"{float(row[col].replace(',', '')) * scale:.1f}")
                except (KeyError, ValueError):
                    vals.append("-")
            stalls = {}
            for col, v in row.items():
                if col and col.startswith(STALL) and col.endswith("_per_issue_active.ratio"):
                    try:
                        stalls[col[len(STALL):-len("_per_issue_active.ratio")]] = float(v.replace(",", ""))
                    except ValueError:
                        pass
            top = ", ".join(f"{k} {v:.2f}" for k, v in sorted(stalls.items(), key=lambda kv: -kv[1])[:3])
            out.append(f"| {path.stem} | {row.get('Kernel Name', '?')[:24]} | " + " | ".join(vals) + f" | {top} |")
    return "\n".join(out)


def main(argv=None):
    args = parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize))
        return 0
    import torch
    from bench_kernels import build_state
    from unique_asr.kernels.select_pages import score_pages, select_pages
    from unique_asr.kernels.select_pages.triton import SelectConfig

    cfg = one_config(args.set, SelectConfig(), "--set")
    torch.manual_seed(0)
    S = args.page_size
    st = build_state(args.batch, args.tokens, args.heads, args.kv_heads, args.head_dim, S, torch.bfloat16,
                     contiguous=False)
    mean, scale = (st["mean"], None) if args.code == "bf16" else (st[f"mean_{args.code}"], st[f"scale_{args.code}"])
    for _ in range(args.calls):
        if args.score_only:
            score_pages(st["q"], st["table"], st["lengths"], mean, st["std"], page_size=S, scale=scale, config=cfg)
        else:
            select_pages(st["q"], st["table"], st["lengths"], mean, st["std"], k=args.budget // S, page_size=S,
                         scale=scale, config=cfg)
    torch.cuda.synchronize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
