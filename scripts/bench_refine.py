"""Time the re-ranking kernel (`refine_pages`, SparsityConfig.refine) alone, by how it keeps k of the C = k + m
candidates: "drop" (the m lowest removed, one reduction each) against "kth" (the select kernel's k-th-key
bisection), and "gather" (k = C: the candidates' means gathered and scored, nothing dropped) as the floor of
both. Same timing as bench_kernels.py (CUDA graph, do_bench with L2 cleared, arms alternated, median of rounds).

    python scripts/bench_refine.py --batch 1 80 --k 64 128 512 --extra 4 --out refine.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_kernels import time_arms  # noqa: E402


def inputs(B, pages, Hkv, G, D, C, seed=0):
    """Rows of `pages` pages each (physical ids b * pages + i) and C sorted random candidates per (row, head)."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(B, Hkv * G, D, device="cuda", generator=g).bfloat16()
    mean = torch.randn(B * pages, Hkv, D, device="cuda", generator=g).bfloat16()
    std = torch.rand(B * pages, Hkv, device="cuda", generator=g)
    table = torch.arange(B * pages, device="cuda", dtype=torch.int32).view(B, pages)
    pick = torch.rand(B, Hkv, pages, device="cuda", generator=g).argsort(-1)[..., :C].sort(-1).values
    cand = (pick + torch.arange(B, device="cuda")[:, None, None] * pages).int().contiguous()
    lengths = torch.full((B,), pages * 8, dtype=torch.int32, device="cuda")
    return q, cand, table, lengths, mean, std


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 80])
    p.add_argument("--k", type=int, nargs="+", default=[64, 128, 512], help="pages kept")
    p.add_argument("--extra", type=int, nargs="+", default=[4], help="refine: candidates beyond k")
    p.add_argument("--tokens", type=int, default=32768, help="row length (page size 8)")
    p.add_argument("--hkv", type=int, default=8)
    p.add_argument("--group", type=int, default=4, help="query heads per KV head")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--rep-ms", type=float, default=10)
    p.add_argument("--out", type=Path)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from unique_asr.kernels.select_pages import refine_pages

    rows = []
    for B in args.batch:
        for k in args.k:
            for m in args.extra:
                C = k + m
                q, cand, table, lens, mean, std = inputs(B, args.tokens // 8, args.hkv, args.group, args.dim, C)
                kw = dict(page_size=8, mode="unique", keep_first=True, keep_last=True)
                outs = {meth: refine_pages(q, cand, table, lens, mean, std, k=k, method=meth, **kw)
                        for meth in ("drop", "kth")}
                assert torch.equal(outs["drop"], outs["kth"]), (B, k, m)
                arms = {
                    "drop": lambda: refine_pages(q, cand, table, lens, mean, std, k=k, method="drop", **kw),
                    "kth": lambda: refine_pages(q, cand, table, lens, mean, std, k=k, method="kth", **kw),
                    "gather": lambda: refine_pages(q, cand, table, lens, mean, std, k=C, **kw),
                }
                ms, _, errors = time_arms(arms, args.rounds, args.rep_ms)
                floor_us = B * args.hkv * C * args.dim * 2 / 3.35e12 * 1e6  # candidates' means at H100 peak
                rows.append(dict(B=B, k=k, m=m, us={n: v * 1e3 for n, v in ms.items()}, floor_us=floor_us,
                                 errors=errors))
                print(B, k, m, {n: round(v * 1e3, 1) for n, v in ms.items()}, errors or "", flush=True)
    if args.out:
        args.out.write_text(json.dumps(dict(device=torch.cuda.get_device_name(), rows=rows), indent=1))
    print("\n| B | k + m | drop, us | kth, us | gather only (k = C), us | kth / drop | bytes at 3.35 TB/s, us |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        u = r["us"]
        print(f"| {r['B']} | {r['k']} + {r['m']} | {u.get('drop', 0):.1f} | {u.get('kth', 0):.1f} | "
              f"{u.get('gather', 0):.1f} | {u.get('kth', 0) / max(u.get('drop', 1), 1e-9):.2f}x | {r['floor_us']:.2f} |")


if __name__ == "__main__":
    main()
