"""Kernel profile of one batched speech-LLM prefill (`LLM.prefill_rows`): --rows rows of --chunk new tokens over
--context held tokens each, Voxtral-Mini-3B shape with random weights (bf16 on CUDA), the way the pipeline
prefills a window's chunk for recordings decoded in step. Prints the wall time of one call (host included) and
torch.profiler's table of the busiest kernels of the next call (the key length grows by --chunk a call, as in
the pipeline; on CUDA llm.PREFILL_KEY_BUCKET rounds it up, so calls within one bucket reuse cuDNN's plan).

    python scripts/profile_prefill.py --context 7500          # one H100: BENCHMARKS.md "The host one step behind"
    python scripts/profile_prefill.py --tiny --device cpu     # smoke test
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from bench_e2e import random_module, speech_llm_config


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--chunk", type=int, default=440, help="new tokens a row (Voxtral: 375 audio + prompt + text)")
    p.add_argument("--context", type=int, default=7500, help="tokens each row holds before the call")
    p.add_argument("--tiny", action="store_true", help="a tiny model (smoke test)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--top", type=int, default=22, help="rows of the profiler table")
    args = p.parse_args(argv)

    from torch.profiler import ProfilerActivity, profile

    from unique_asr.config import SparsityConfig
    from unique_asr.models.llm import LLM, allocate_cache
    from unique_asr.timing import sync

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config, _ = speech_llm_config(args.tiny, "voxtral-mini-3b")
    c = config.llm
    llm = random_module(lambda: LLM(c), dtype, device)
    A, T = args.rows, args.chunk
    pages = (args.context + 4 * T) // 8 + 8
    cache = allocate_cache(c, SparsityConfig(mode="unique"), batch=A, num_pages=A * pages, max_pages_per_seq=pages,
                           dtype=dtype, device=device)
    cache.reserve([args.context] * A)
    x = torch.randn(A, T, c.hidden_size, device=device, dtype=dtype) * 0.1
    positions = [args.context] * A

    def call():
        llm.prefill_rows(x, cache, list(range(A)), positions)
        positions[:] = [q + T for q in positions]

    call()
    sync(device)
    t0 = time.perf_counter()
    call()
    sync(device)
    wall = (time.perf_counter() - t0) * 1e3
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        call()
        sync(device)
    print(f"prefill {A} x {T} over {args.context + T} held: wall {wall:.1f} ms")
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=args.top, max_name_column_width=70))
    return 0


if __name__ == "__main__":
    sys.exit(main())
