"""One Whisper decoder step on the CPU, per weight type and thread count, alternated rounds (ms per step).

    OMP_WAIT_POLICY=PASSIVE python scripts/bench_cpu_step.py --model base --dtypes float32,int8 --threads 2
    python scripts/bench_cpu_step.py --model base --dtypes float32 --threads 1,2

Rows: `--rows` decode rows over random encoder states (30 s windows), `--steps` one-token steps per timing.
OMP_WAIT_POLICY is read by libgomp when torch loads: set it in the environment, not here.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import unique_asr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="base")
    parser.add_argument("--dtypes", default="float32,int8")
    parser.add_argument("--threads", default="2")
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    models = {dt: unique_asr.load_model(args.model, device="cpu", dtype=dt).bundle.model for dt in args.dtypes.split(",")}
    config = next(iter(models.values())).config
    encoded = torch.randn(args.rows, config.n_audio_ctx, config.n_audio_state)

    def step_ms(model, threads: int) -> float:
        torch.set_num_threads(threads)
        cross = model.memory(encoded)
        state = model.allocate_state(args.rows, args.steps + 1)
        tokens = torch.full((args.rows, 1), 50257)
        with torch.inference_mode():
            model.step(tokens, state, cross)
            started = time.perf_counter()
            for _ in range(args.steps - 1):
                model.step(tokens, state, cross)
            return (time.perf_counter() - started) / (args.steps - 1) * 1000

    print(f"{args.model}, {args.rows} rows, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    for _ in range(args.rounds):
        row = {f"{dt} x{th}": round(step_ms(m, int(th)), 1) for dt, m in models.items() for th in args.threads.split(",")}
        print(row, f"load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
