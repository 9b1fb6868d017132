"""What SparsityConfig.unselected="estimate" costs on the GPU: the sparse decode attention over the selected
pages alone ("drop", `sparse_decode_attention`) against the same plus the page-mean terms of the unselected
pages ("estimate", `sparse_decode_attention_estimate`: the decode kernel's per-split partials, then one
program per (sequence, KV head) over every held page's key and value means), same inputs, same card,
one run. Page selection is not timed (it is the same for both). Shapes that do not fit are skipped and
recorded, not fatal.

    python scripts/bench_estimate.py --out estimate_bench.json

Shapes (name: rows B, KV heads, query heads, D, tokens per row, S, k): Whisper base / small / large-v3
cross-attention at page 8, budget 512 (rows = 16 windows x 5 beams) and LLM decode rows.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

SHAPES = {  # name: (B, Hkv, H, D, N, S, k)
    "whisper-base-cross": (80, 8, 8, 64, 1500, 8, 64),
    "whisper-small-cross": (80, 12, 12, 64, 1500, 8, 64),
    "whisper-large-cross": (80, 20, 20, 64, 1500, 8, 64),
    "llm-b80-32k": (80, 8, 32, 128, 32768, 8, 64),
    "llm-b1-128k": (1, 8, 32, 128, 131072, 8, 64),
}


def inputs(B, Hkv, H, D, N, S, k, device="cuda", dtype=torch.bfloat16, seed=0):
    """Pools with each row's pages at shuffled physical ids, page means, and k random held pages per
    (row, KV head)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    M = -(-N // S)
    P = B * M
    k_pool = torch.randn(P, S, Hkv, D, device=device, dtype=dtype, generator=gen)
    v_pool = torch.randn(P, S, Hkv, D, device=device, dtype=dtype, generator=gen)
    table = torch.randperm(P, device=device, generator=gen).view(B, M).to(torch.int32)
    lengths = torch.full((B,), N, dtype=torch.int32, device=device)
    pick = torch.rand(B, Hkv, M, device=device, generator=gen).argsort(-1)[..., :k]
    ids = table[:, None, :].expand(B, Hkv, M).gather(2, pick).to(torch.int32).contiguous()
    key_mean, value_mean = k_pool.float().mean(1).to(dtype), v_pool.float().mean(1).to(dtype)
    q = torch.randn(B, H, D, device=device, dtype=dtype, generator=gen)
    return q, k_pool, v_pool, ids, table, lengths, key_mean, value_mean


def bench_shape(name, shape, rep_ms) -> dict:
    import triton.testing
    from unique_asr.kernels.sparse_decode import (
        sparse_decode_attention,
        sparse_decode_attention_estimate,
        sparse_decode_attention_estimate_naive,
    )

    B, Hkv, H, D, N, S, k = shape
    rec = {"shape": name, "B": B, "Hkv": Hkv, "H": H, "D": D, "tokens": N, "page_size": S, "k": k}
    try:
        q, kp, vp, ids, table, lengths, km, vm = inputs(*shape)
        drop = lambda: sparse_decode_attention(q, kp, vp, ids, table, lengths)
        est = lambda: sparse_decode_attention_estimate(q, kp, vp, ids, table, lengths, km, vm)
        if B * H * N <= 80 * 8 * 1500:  # the fp32 twin fits: check the kernel before timing it
            ref = sparse_decode_attention_estimate_naive(q, kp, vp, ids, table, lengths, km, vm).float()
            rec["rel_error_vs_twin"] = ((est().float() - ref).norm() / ref.norm()).item()
        rec["drop_us"] = 1e3 * triton.testing.do_bench(drop, rep=rep_ms, return_mode="median")
        rec["estimate_us"] = 1e3 * triton.testing.do_bench(est, rep=rep_ms, return_mode="median")
    except torch.cuda.OutOfMemoryError:
        rec["skipped"] = "out of GPU memory"
        torch.cuda.empty_cache()
        return rec
    M = -(-N // S)
    rec["ratio"] = rec["estimate_us"] / rec["drop_us"]
    rec["drop_bytes"] = B * Hkv * k * S * D * 2 * 2                 # the selected pages' K and V, bf16
    rec["estimate_extra_bytes"] = B * Hkv * M * D * 2 * 2            # every held page's key and value mean
    return rec


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--rep-ms", type=int, default=200)
    p.add_argument("--out")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("bench_estimate.py times Triton kernels on a CUDA GPU; none is available", file=sys.stderr)
        return 2
    card = torch.cuda.get_device_name()
    records = [dict(bench_shape(n, SHAPES[n], args.rep_ms), card=card) for n in args.shapes]
    print(f"| shape ({card}) | drop us | estimate us | ratio | extra bytes / drop bytes |\n|---|---|---|---|---|")
    for r in records:
        if "skipped" in r:
            print(f"| {r['shape']} | skipped: {r['skipped']} | | | |")
        else:
            print(f"| {r['shape']} | {r['drop_us']:.1f} | {r['estimate_us']:.1f} | {r['ratio']:.2f} | "
                  f"{r['estimate_extra_bytes'] / r['drop_bytes']:.2f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(records, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
