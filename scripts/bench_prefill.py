"""Prefill attention of speech-LLM rows (issue 11): a window's chunk of T new tokens attending over the N tokens
its row holds (the cached recording + the chunk), as `LLM.prefill_rows` runs it: K/V gathered out of the pages,
then `dense_attention` (causal, bottom-right aligned, GQA). Arms, each timed with CUDA events (median of
--rounds), each checked against the first:

- `masked`: one row, SDPA with a materialised [T, N] boolean mask (`dense_attention`'s path);
- `bias`: one row, the lower-right causal bias instead of the mask (tried in the thirteenth session: slower);
- `flash`: the bias with SDPA restricted to flash attention (an error where flash refuses the call);
- `gather`: one row's page gather alone (the copy every arm pays);
- `rows_one_by_one`: --rows rows holding N tokens each, one gather + attention call per row (prefill_rows
  before the fourteenth session), ms per row;
- `rows_batched`: the same rows as `prefill_rows` runs them now (rows of equal length in one call, up to
  llm.PREFILL_GATHER_BYTES of K + V gathered a call), ms per row.

    python scripts/bench_prefill.py --contexts 2048 8192 30000 --out prefill.json
    python scripts/bench_prefill.py --device cpu --contexts 64 --chunk 16 --rounds 1   # smoke test

`--growing N0 CALLS`: the pipeline's pattern instead, where every prefill meets a new key length (a recording's
context grows by a window each time): CALLS batched calls (--rows rows of T) over N0, N0 + T + 64, ... keys,
each timed by its wall (host included: an attention backend that plans per key length pays it on the host), for
`exact` (the key length as held, SDPA's pick), `bucket_B` (key lengths padded to a multiple of B and masked:
llm.PREFILL_KEY_BUCKET; B = 1024 and 1800, whose multiples do not meet below 230K, so one arm's plans do not
serve the other) and `efficient_exact` (SDPA restricted to its memory-efficient kernel). Median and first ms.

    python scripts/bench_prefill.py --growing 7000 12 --out prefill_growing.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def timed(fn, device: torch.device, rounds: int) -> float:
    """Median ms of fn() over `rounds` calls after one warm-up (CUDA events on CUDA)."""
    fn()
    times = []
    for _ in range(rounds):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def arms(N: int, args, device: torch.device) -> dict:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.bias import causal_lower_right

    from unique_asr.attention import dense_attention
    from unique_asr.models.llm import _gather_rows, _page_index, _prefill_groups

    H, Hkv, D, S, T, A = args.heads, args.kv_heads, args.head_dim, args.page_size, args.chunk, args.rows
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    pages = -(-N // S)
    pool_k = torch.randn(A * pages + 16, S, Hkv, D, device=device, dtype=dtype)
    pool_v = torch.randn_like(pool_k)
    table = torch.randperm(A * pages + 16, device=device)[:A * pages].int().view(A, pages)  # scattered pages
    q = torch.randn(A, T, H, D, device=device, dtype=dtype)
    pos, qpos = torch.arange(N, device=device), torch.arange(T, device=device) + (N - T)

    row_ids = torch.arange(A, device=device)

    def gather(a: int = 0):  # one row's K and V [1, N, Hkv, D]
        one = row_ids[a:a + 1]
        pages = _page_index(table, one, N, S)
        return _gather_rows(pool_k, pages, N), _gather_rows(pool_v, pages, N)

    def sdpa(k, v, mask):
        return F.scaled_dot_product_attention(q[:1].transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                              attn_mask=mask, enable_gqa=H != Hkv).transpose(1, 2)

    def masked():
        k, v = gather()
        return sdpa(k, v, (pos[None, :] <= qpos[:, None])[None, None])

    def bias():
        k, v = gather()
        return sdpa(k, v, causal_lower_right(T, N))

    def flash():
        k, v = gather()
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return sdpa(k, v, causal_lower_right(T, N))

    def one_by_one():
        return torch.cat([dense_attention(q[a:a + 1], *gather(a), causal=True) for a in range(A)])

    groups = _prefill_groups(list(range(A)), [N] * A, 2 * Hkv * D * q.element_size(), device)

    def batched():
        out = torch.empty_like(q)
        for idx, rows, n in groups:
            pages = _page_index(table, rows, n, S)
            k, v = _gather_rows(pool_k, pages, n), _gather_rows(pool_v, pages, n)
            out[idx] = dense_attention(q[idx], k, v, causal=True)
        return out

    row = dict(N=N, T=T, H=H, Hkv=Hkv, D=D, rows=A, calls_batched=len(groups))
    ref = masked()
    for name, fn in (("gather", gather), ("masked", masked), ("bias", bias), ("flash", flash)):
        try:
            row[f"{name}_ms"] = timed(fn, device, args.rounds)
            if name != "gather":
                row[f"{name}_max_err"] = (fn().float() - ref.float()).abs().max().item()
        except RuntimeError as exc:  # flash may refuse a shape or dtype on this card
            row[f"{name}_ms"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
    ref = one_by_one()
    for name, fn in (("rows_one_by_one", one_by_one), ("rows_batched", batched)):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        row[f"{name}_ms"] = timed(fn, device, args.rounds) / A
        row[f"{name}_max_err"] = (fn().float() - ref.float()).abs().max().item()
        if device.type == "cuda":
            row[f"{name}_peak_gib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**30
    return row


GROWING_BUCKETS = (1024, 1800)


def growing(args, device: torch.device) -> list[dict]:
    """One row per arm of the `--growing` mode (module docstring): wall ms of each call, median and first; an
    arm that a backend refuses (the memory-efficient kernel on a CPU) records its error."""
    from torch.nn.attention import SDPBackend

    H, Hkv, D, S, T, A = args.heads, args.kv_heads, args.head_dim, args.page_size, args.chunk, args.rows
    start, calls = args.growing
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    arms = [("exact", 0, None), *((f"bucket_{b}", b, None) for b in GROWING_BUCKETS),
            ("efficient_exact", 0, [SDPBackend.EFFICIENT_ATTENTION])]
    pages = -(-(max(GROWING_BUCKETS) + start + (calls + 1) * (T + 64) + len(arms)) // S)
    pool_k = torch.randn(A * pages, S, Hkv, D, device=device, dtype=dtype)
    pool_v = torch.randn_like(pool_k)
    table = torch.randperm(A * pages, device=device).int().view(A, pages)  # scattered pages
    q = torch.randn(A, T, H, D, device=device, dtype=dtype)
    out = []
    for a, (name, bucket, backends) in enumerate(arms):
        try:
            walls, err = _growing_calls(a, bucket, backends, args, device, (pool_k, pool_v, table), q)
        except RuntimeError as exc:
            out.append(dict(arm=name, bucket=bucket, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"))
            continue
        out.append(dict(arm=name, bucket=bucket, rows=A, T=T, first_N=start, calls=calls, first_ms=walls[0],
                        median_ms=statistics.median(walls), mean_ms=statistics.fmean(walls), max_err=err))
    return out


def _growing_calls(a: int, bucket: int, backends, args, device, pools, q) -> tuple[list[float], float]:
    """Wall ms of each call of one `--growing` arm, and the last call's error against the exact call."""
    from contextlib import nullcontext

    from torch.nn.attention import sdpa_kernel

    from unique_asr.attention import dense_attention
    from unique_asr.models.llm import _gather_rows, _page_index, bucketed_keys

    pool_k, pool_v, table = pools
    start, calls = args.growing
    rows = torch.arange(q.shape[0], device=device)
    walls = []
    for i in range(calls):
        n = start + i * (args.chunk + 64) + a  # a window's chunk and its transcript; an offset per arm
        padded = bucketed_keys(n, bucket, table.shape[1] * args.page_size)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        pages = _page_index(table, rows, padded, args.page_size)
        k, v = _gather_rows(pool_k, pages, padded), _gather_rows(pool_v, pages, padded)
        with sdpa_kernel(backends) if backends else nullcontext():
            got = dense_attention(q, k, v, causal=True, valid_keys=n)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        walls.append((time.perf_counter() - t0) * 1e3)
    want = dense_attention(q, k[:, :n], v[:, :n], causal=True)
    return walls, (got.float() - want.float()).abs().max().item()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contexts", type=int, nargs="+", default=[2048, 8192, 30000], help="N: tokens the row holds")
    p.add_argument("--chunk", type=int, default=440, help="T: new tokens (Voxtral: 375 audio + prompt + text)")
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--page-size", type=int, default=8)
    p.add_argument("--rows", type=int, default=16, help="rows of N tokens each for the rows_* arms")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--device", default="cuda")
    p.add_argument("--growing", type=int, nargs=2, metavar=("N0", "CALLS"),
                   help="time CALLS batched calls over growing key lengths from N0 instead (module docstring)")
    p.add_argument("--out", type=Path)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    name = str(device) if device.type != "cuda" else torch.cuda.get_device_name(device)
    if args.growing:
        rows = growing(args, device)
        if args.out:
            args.out.write_text(json.dumps(dict(device=name, growing=rows), indent=1))
        print("\n| arm | median ms a call | first ms | mean ms | max err |\n|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['arm']} | " + (r["error"] if "error" in r else
                                        f"{r['median_ms']:.2f} | {r['first_ms']:.2f} | {r['mean_ms']:.2f} | "
                                        f"{r['max_err']:.1e}") + " |")
        return 0
    rows = []
    for N in args.contexts:
        if N < args.chunk:
            print(f"N={N} skipped: shorter than the chunk ({args.chunk})", file=sys.stderr)
            continue
        rows.append(arms(N, args, device))
        print(json.dumps(rows[-1]), flush=True)
        if args.out:
            args.out.write_text(json.dumps(dict(device=name, rows=rows), indent=1))
    arms_shown = ("gather", "masked", "bias", "flash", "rows_one_by_one", "rows_batched")
    print("\n| N | " + " | ".join(f"{a} ms" for a in arms_shown) + " |")
    print("|---" * (len(arms_shown) + 1) + "|")
    for r in rows:
        cells = [r[f"{a}_ms"] for a in arms_shown]
        print(f"| {r['N']} | " + " | ".join(f"{c:.3f}" if isinstance(c, float) else str(c) for c in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
