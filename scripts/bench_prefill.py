"""Prefill attention of one speech-LLM row (issue 11): a window's chunk of T new tokens attending over the N tokens
its row holds (the cached recording + the chunk), as `LLM.prefill_rows` runs it: the row's K/V gathered out of
its pages, then `dense_attention` (causal, bottom-right aligned, GQA). Arms, each timed with CUDA events (median
of --rounds), each checked against the first:

- `masked`: SDPA with a materialised [T, N] boolean mask (the code before the lower-right causal bias);
- `dense_attention`: the package's path (lower-right causal bias: SDPA free to pick a fused kernel);
- `flash`: the same bias with SDPA restricted to flash attention (an error where flash refuses the call);
- `gather`: the page gather alone (the copy every arm pays).

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
    from unique_asr.attention import dense_attention
    from unique_asr.models.llm import _gather

    H, Hkv, D, S, T = args.heads, args.kv_heads, args.head_dim, args.page_size, args.chunk
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    pages = -(-N // S)
    pool_k = torch.randn(pages + 16, S, Hkv, D, device=device, dtype=dtype)
    pool_v = torch.randn_like(pool_k)
    table = torch.randperm(pages + 16, device=device)[:pages].int()  # the row's pages, scattered in the pool
    q = torch.randn(1, T, H, D, device=device, dtype=dtype)
    pos, qpos = torch.arange(N, device=device), torch.arange(T, device=device) + (N - T)

    def gather():
        return _gather(pool_k, table, N), _gather(pool_v, table, N)

    def sdpa(k, v, mask):
        return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                              attn_mask=mask, enable_gqa=H != Hkv).transpose(1, 2)

    def masked():
        k, v = gather()
        return sdpa(k, v, (pos[None, :] <= qpos[:, None])[None, None])

    def package():
        k, v = gather()
        return dense_attention(q, k, v, causal=True)

    def flash():
        from torch.nn.attention.bias import causal_lower_right

        k, v = gather()
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return sdpa(k, v, causal_lower_right(T, N))

    row = dict(N=N, T=T, H=H, Hkv=Hkv, D=D)
    ref = masked()
    for name, fn in (("gather", gather), ("masked", masked), ("dense_attention", package), ("flash", flash)):
        try:
            row[f"{name}_ms"] = timed(fn, device, args.rounds)
            if name != "gather":
                row[f"{name}_max_err"] = (fn().float() - ref.float()).abs().max().item()
        except RuntimeError as exc:  # flash may refuse a shape or dtype on this card
            row[f"{name}_ms"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
    return row


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contexts", type=int, nargs="+", default=[2048, 8192, 30000], help="N: tokens the row holds")
    p.add_argument("--chunk", type=int, default=440, help="T: new tokens (Voxtral: 375 audio + prompt + text)")
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--page-size", type=int, default=8)
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
    print("\n| N | gather ms | masked ms | dense_attention ms | flash ms |\n|---|---|---|---|---|")
    for r in rows:
        cells = [r[f"{a}_ms"] for a in ("gather", "masked", "dense_attention", "flash")]
        print(f"| {r['N']} | " + " | ".join(f"{c:.3f}" if isinstance(c, float) else str(c) for c in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
