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
    from unique_asr.models.llm import _gather_rows, _prefill_groups

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
        return _gather_rows(pool_k, table, one, N), _gather_rows(pool_v, table, one, N)

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
            k, v = _gather_rows(pool_k, table, rows, n), _gather_rows(pool_v, table, rows, n)
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
    p.add_argument("--out", type=Path)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    rows = []
    for N in args.contexts:
        if N < args.chunk:
            print(f"N={N} skipped: shorter than the chunk ({args.chunk})", file=sys.stderr)
            continue
        rows.append(arms(N, args, device))
        print(json.dumps(rows[-1]), flush=True)
        if args.out:
            args.out.write_text(json.dumps(dict(device=str(device) if device.type != "cuda" else
                                                torch.cuda.get_device_name(device), rows=rows), indent=1))
    arms_shown = ("gather", "masked", "bias", "flash", "rows_one_by_one", "rows_batched")
    print("\n| N | " + " | ".join(f"{a} ms" for a in arms_shown) + " |")
    print("|---" * (len(arms_shown) + 1) + "|")
    for r in rows:
        cells = [r[f"{a}_ms"] for a in arms_shown]
        print(f"| {r['N']} | " + " | ".join(f"{c:.3f}" if isinstance(c, float) else str(c) for c in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
