"""Shared pieces of the end-to-end benchmarks (scripts/bench_e2e.py): alternated timing rounds, random models
built in their own dtype, kernel counts from the profiler, JSON records.

CUDA-graph capture and the code version come from scripts/bench_kernels.py (same harness as the kernel bench).
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch

if str(Path(__file__).resolve().parent) not in sys.path:  # scripts/ is not a package (a script run has it first)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_kernels import capture, code_version  # noqa: F401  (capture is re-exported to the benches)

from unique_asr.timing import sync, timed_ms

# Kernel names (Triton functions, or the PyTorch twins' signature ops on CPU) whose launches prove a path ran.
SPARSE_MARKERS = ("_select_kernel", "_score_kernel", "aten::topk", "aten::sort")
ATTENTION_MARKERS = ("_decode_kernel", "_merge_kernel", "flash", "fmha", "attention", "cudnn")


def time_arms(arms: dict[str, Callable[[], None]], rounds: int, device: torch.device, per: int = 1,
              warmup: bool = True) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Each arm's call timed once per round, arms alternated in an order rotated every round.

    per: units (e.g. decode steps) one call runs; times are ms per unit. warmup: call every arm once first,
    untimed (lazy init, Triton compilation). Returns (median over rounds, every round's value) per arm.
    """
    names = list(arms)
    for n in names if warmup else ():
        arms[n]()
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            samples[n].append(timed_ms(arms[n], device) / per)
    return {n: statistics.median(v) for n, v in samples.items()}, samples


def random_module(factory: Callable[[], torch.nn.Module], dtype: torch.dtype, device: torch.device):
    """factory() with random init made directly in `dtype` on `device` (no fp32 copy of a 7B model), eval mode."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return factory().eval()
    finally:
        torch.set_default_dtype(previous)


def kernel_counts(fn: Callable[[], None], calls: int, device: torch.device, per: int = 1) -> dict:
    """Launches per unit (a call of fn runs `per` units, e.g. decode steps), by name, from torch.profiler
    (device kernels on CUDA, operators on CPU).

    Returns {"per_call": {name: launches / units}, "sparse_select_per_call", "attention_per_call",
    "time_us_per_call": {name: µs / unit} of the 25 busiest names, "busy_us_per_call": their sum over all names}
    where the sparse/attention counts sum the names matching SPARSE_MARKERS / ATTENTION_MARKERS: the proof a
    path ran; the times say where a step's device time goes (kernel durations, launch gaps excluded).
    """
    units = calls * per
    from torch.profiler import ProfilerActivity, profile

    from unique_asr.kernels._pdl import ENV as PDL_ENV

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    # eager launches without programmatic dependent launch: a PDL kernel's duration includes its wait for the
    # kernel before it (kernels/_pdl.py). A graph captured with it keeps it: its kernel times include the waits.
    saved, os.environ[PDL_ENV] = os.environ.get(PDL_ENV), "0"
    try:
        fn()  # first call outside: lazy init and compilation are not counted
        sync(device)
        with profile(activities=activities) as prof:
            for _ in range(calls):
                fn()
            sync(device)
    finally:
        if saved is None:
            del os.environ[PDL_ENV]
        else:
            os.environ[PDL_ENV] = saved
    want = "cuda" if device.type == "cuda" else "cpu"
    events = [e for e in prof.events() if e.device_type.name.lower() == want]
    counts = Counter(e.name for e in events)
    per_call = {name: n / units for name, n in counts.most_common(60)}
    busy = Counter()
    for e in events:
        busy[e.name] += e.time_range.elapsed_us()
    time_us = {name: round(us / units, 2) for name, us in busy.most_common(25)}

    def matching(markers):
        return sum(n for name, n in counts.items() if any(m in name for m in markers)) / units

    return {"per_call": per_call, "sparse_select_per_call": matching(SPARSE_MARKERS),
            "attention_per_call": matching(ATTENTION_MARKERS), "time_us_per_call": time_us,
            "busy_us_per_call": round(sum(busy.values()) / units, 2)}


def guarded(fn: Callable[[], list[dict]], **shape) -> list[dict]:
    """fn()'s records, or one `error` record for this shape, so that one failing shape (out of memory, a capture
    or compile error) does not lose the rest of a sweep; the traceback is printed."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001  (recorded, the sweep goes on)
        traceback.print_exc()
        return [dict(arm="error", **shape, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")]


def peak_gib(device: torch.device) -> float | None:
    """Peak device memory allocated since the last reset, GiB (None off CUDA)."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    """Free what the previous shape left (caches, graph pools) and restart the peak-memory count."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def run_header(bench: str, device: torch.device, args) -> dict:
    """The first record of a run: what ran, where, with which code and options."""
    import triton

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return dict(arm="run", bench=bench, device=name, code=code_version(), torch=torch.__version__,
                triton=triton.__version__, options={k: v for k, v in vars(args).items() if k not in ("func", "out")})


def with_speedups(records: list[dict], baseline: str, key: Callable[[dict], tuple], field: str = "median_ms"
                  ) -> list[dict]:
    """Add speedup_vs_<baseline> = baseline's field / arm's field to records sharing key(record); for a field
    other than median_ms the name is <field stem>_speedup_vs_<baseline> (e.g. device_speedup_vs_dense)."""
    name = f"speedup_vs_{baseline}" if field == "median_ms" else f"{field.split('_')[0]}_speedup_vs_{baseline}"
    base = {key(r): r[field] for r in records if r.get("arm") == baseline and r.get(field)}
    for r in records:
        if r.get(field) and key(r) in base:
            r[name] = base[key(r)] / r[field]
    return records


def write_records(records: list[dict], out: str | None) -> None:
    """The records as a JSON list (written after every shape, so a run cut short keeps what it measured)."""
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w") as f:
            json.dump(records, f, indent=1)


_LLM_COLUMNS = [("B", "B", "{}"), ("N", "N", "{}"), ("arm", "arm", "{}"), ("ms/token", "median_ms", "{:.3f}"),
                ("device ms", "device_ms", "{:.3f}"), ("tokens/s", "tokens_per_s", "{:.0f}"),
                ("speedup", "speedup_vs_dense", "{:.2f}x"), ("device speedup", "device_speedup_vs_dense", "{:.2f}x"),
                ("peak GiB", "peak_gib", "{:.1f}"), ("select launches/step", "kernels.sparse_select_per_call", "{:g}")]
TABLES = {
    "llm-decode": [*_LLM_COLUMNS, ("anchor", "anchor_speedup", "{}x")],
    "speech-llm": [("minutes", "minutes", "{:g}"), *_LLM_COLUMNS],
    "whisper-step": [("shape", "shape", "{}"), ("B", "B", "{}"), ("arm", "arm", "{}"), ("ms/step", "median_ms", "{:.3f}"),
                     ("speedup (same mode)", "speedup_vs_dense", "{:.2f}x"),
                     ("vs dense eager", "speedup_vs_dense_eager", "{:.2f}x"), ("peak GiB", "peak_gib", "{:.1f}"),
                     ("select launches/step", "kernels.sparse_select_per_call", "{:g}")],
    "whisper-longform": [("file", "file", "{}"), ("arm", "arm", "{}"), ("s", "median_s", "{:.2f}"),
                         ("RTFx", "rtfx", "{:.1f}"), ("vs transformers", "speedup_vs_transformers", "{:.2f}x"),
                         ("vs dense", "speedup_vs_dense", "{:.2f}x"), ("WER", "wer", "{:.4f}")],
}


def _cell(record: dict, key: str, fmt: str) -> str:
    value = record
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "-" if value is None else fmt.format(value)


def markdown_table(records: list[dict]) -> str:
    """A BENCHMARKS.md table of one run's records (first record: the run header), skipped shapes listed below."""
    columns = TABLES[records[0]["bench"]]
    lines = ["| " + " | ".join(h for h, _, _ in columns) + " |", "|---" * len(columns) + "|"]
    lines += ["| " + " | ".join(_cell(r, k, f) for _, k, f in columns) + " |" for r in records[1:] if "median_ms" in r]
    lines += [f"- skipped: {r.get('minutes', '')} min, B={r['B']}: {r['skipped']}" for r in records if "skipped" in r]
    lines += [f"- error: {({k: v for k, v in r.items() if k not in ('arm', 'error')})}: {r['error']}"
              for r in records if "error" in r]
    return "\n".join(lines)
