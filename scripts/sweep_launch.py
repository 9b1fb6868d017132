"""Sweep the launch parameters of the page-selection and (sparse or dense) attention kernels at chosen shapes.

bench_kernels.py times the default launch against dense decode; this script asks a narrower question: at
these (batch, tokens) shapes, which `SelectConfig` (score + top-k, or the scoring pass alone) and which
`DecodeConfig` (attention over the chosen pages) is fastest, and by how much against the default of the same
run. Every config is checked to select exactly the default's pages (else it is reported, not ranked). Same
timing as bench_kernels.py: a CUDA graph per config, do_bench with L2 cleared, configs alternated in
rotating order over rounds, median of the round medians.

A grid is `field=v1,v2 field=v1`: the cartesian product of the listed values over the default config
(`none` for None; scripts/launch_configs.py); --select-grid / --attn-grid / --dense-grid may each be given
several times (the union is timed). bench_kernels.py runs a chosen point through every arm
(--select-config / --attn-config / --dense-config).

    python scripts/sweep_launch.py --batch 4 16 80 --tokens 30000 32768 \
        --select-grid block_r=1024,2048,4096 select_warps=none,8,16 \
        --select-grid pages_per_program=128,256,512 --attn-grid programs_per_sm=1,2,4,8 --out sweep.json
    python scripts/sweep_launch.py --report sweep.json   # the table again, no GPU
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_kernels import build_state, time_arms  # noqa: E402
from launch_configs import add_decode_shape, build, configs, label  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="+", default=[16])
    p.add_argument("--tokens", type=int, nargs="+", default=[30000])
    add_decode_shape(p)
    p.add_argument("--codes", nargs="*", default=[], help="one-byte key-mean formats timed beside bf16 (fp8, int8)")
    p.add_argument("--score-only", action="store_true", help="time the scoring pass alone, not score + top-k")
    p.add_argument("--select-grid", nargs="+", action="append", default=[], metavar="FIELD=V1,V2")
    p.add_argument("--attn-grid", nargs="+", action="append", default=[], metavar="FIELD=V1,V2",
                   help="DecodeConfig grid of the sparse attention over the chosen pages")
    p.add_argument("--dense-grid", nargs="+", action="append", default=[], metavar="FIELD=V1,V2",
                   help="DecodeConfig grid of our dense paged attention (over its own defaults, DENSE_CONFIG)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rep-ms", type=float, default=10.0)
    p.add_argument("--out", type=Path)
    p.add_argument("--report", type=Path, help="print the table of this JSON file and exit (no GPU needed)")
    args = p.parse_args(argv)
    from unique_asr.kernels.select_pages.triton import SelectConfig
    from unique_asr.kernels.sparse_decode import DecodeConfig

    args.select_points = configs(args.select_grid, SelectConfig, "--select-grid")
    args.attn_points = configs(args.attn_grid, DecodeConfig, "--attn-grid")
    args.dense_points = configs(args.dense_grid, DecodeConfig, "--dense-grid")
    for point in args.select_points:
        build(SelectConfig(), point, "--select-grid")  # values the config refuses: a clean exit now
    return args


def sweep_shape(B, N, args):
    """Yields the rows of each timed group (per means format, then the attention) as it finishes."""
    import torch
    from unique_asr.kernels.select_pages import score_pages, select_pages
    from unique_asr.kernels.select_pages.triton import SelectConfig
    from unique_asr.kernels.sparse_decode import dense_paged_decode_attention, sparse_decode_attention
    from unique_asr.kernels.sparse_decode.triton import DENSE_CONFIG, SPARSE_CONFIG

    S, k = args.page_size, args.budget // args.page_size
    st = build_state(B, N, args.heads, args.kv_heads, args.head_dim, S, torch.bfloat16, contiguous=False)
    q, table, lens = st["q"], st["table"], st["lengths"]
    scores = torch.empty(B, args.kv_heads, table.shape[1], dtype=torch.float32, device=q.device)
    rows = []
    for code in (None, *args.codes):
        mean, scale = (st[f"mean_{code}"], st[f"scale_{code}"]) if code else (st["mean"], None)
        kind = "score" if args.score_only else "select"

        def call(cfg, mean=mean, scale=scale):
            if args.score_only:
                return score_pages(q, table, lens, mean, st["std"], page_size=S, scale=scale, scores=scores,
                                   config=cfg)
            return select_pages(q, table, lens, mean, st["std"], k=k, page_size=S, scale=scale, config=cfg)

        ref = call(SelectConfig()).clone()
        arms, differs = {}, {}
        for point in args.select_points:
            cfg = build(SelectConfig(), point, "--select-grid")
            got = call(cfg)
            if args.score_only:
                differs[label(point)] = not torch.equal(got, ref)
            else:
                differs[label(point)] = not torch.equal(got.sort(-1).values, ref.sort(-1).values)
            arms[label(point)] = lambda cfg=cfg: call(cfg)
        ms, _, errors = time_arms(arms, args.rounds, args.rep_ms)
        for name, t in ms.items():
            rows.append(dict(B=B, N=N, kind=kind, code=code or "bf16", config=name, ms=t,
                             vs_default=t / ms["default"], differs=differs[name]))
        rows += [dict(B=B, N=N, kind=kind, code=code or "bf16", config=n, error=e) for n, e in errors.items()]
        yield rows
        rows = []
    kv = (q, st["k_pool"], st["v_pool"])
    for kind, flag, points, base, fn in (
            ("attention", "--attn-grid", args.attn_points, SPARSE_CONFIG, sparse_decode_attention),
            ("dense", "--dense-grid", args.dense_points, DENSE_CONFIG, dense_paged_decode_attention)):
        if len(points) < 2:
            continue
        ids = (select_pages(q, table, lens, st["mean"], st["std"], k=k, page_size=S),) if kind == "attention" else ()
        a = (*kv, *ids, table, lens)
        ref = fn(*a).float()
        arms, differs = {}, {}
        for point in points:
            cfg = build(base, point, flag)
            err = (fn(*a, config=cfg).float() - ref).abs().max().item()
            differs[label(point)] = err > 2e-2
            arms[label(point)] = lambda cfg=cfg, fn=fn, a=a: fn(*a, config=cfg)
        ms, _, errors = time_arms(arms, args.rounds, args.rep_ms)
        for name, t in ms.items():
            rows.append(dict(B=B, N=N, kind=kind, code="bf16", config=name, ms=t,
                             vs_default=t / ms["default"], differs=differs[name]))
        rows += [dict(B=B, N=N, kind=kind, code="bf16", config=n, error=e) for n, e in errors.items()]
        yield rows
        rows = []
    del st
    torch.cuda.empty_cache()


def table(rows: list[dict], best: int = 5) -> str:
    """Per (shape, kind, code): the default and the `best` fastest configs, with their ratio to the default."""
    out = ["| B | N | kind | code | config | ms | vs default | same pages |", "|---|---|---|---|---|---|---|---|"]
    groups = {}
    for r in rows:
        groups.setdefault((r["B"], r["N"], r["kind"], r["code"]), []).append(r)
    for (B, N, kind, code), rs in groups.items():
        timed = sorted((r for r in rs if "ms" in r), key=lambda r: r["ms"])
        shown = [r for r in timed if r["config"] == "default"] + [r for r in timed if r["config"] != "default"][:best]
        for r in shown:
            out.append(f"| {B} | {N} | {kind} | {code} | {r['config']} | {r['ms']:.4f} | {r['vs_default']:.3f} | "
                       f"{'no' if r['differs'] else 'yes'} |")
        out += [f"| {B} | {N} | {kind} | {code} | {r['config']} | error: {r['error'][:60]} | | |"
                for r in rs if "error" in r]
    return "\n".join(out)


def main(argv=None):
    args = parse_args(argv)
    if args.report:
        print(table(json.loads(args.report.read_text())["rows"]))
        return 0
    import torch

    torch.manual_seed(0)
    print(f"device {torch.cuda.get_device_name()}: {len(args.select_points)} select configs, "
          f"{len(args.attn_points)} attention configs", flush=True)
    rows = []
    for B in args.batch:
        for N in args.tokens:
            for group in sweep_shape(B, N, args):  # written after every group: a run cut short keeps them
                rows += group
                print(f"B={B} N={N} {group[0]['kind']} {group[0]['code']} done", flush=True)
                if args.out:
                    args.out.write_text(json.dumps(dict(device=torch.cuda.get_device_name(), rows=rows), indent=1))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
