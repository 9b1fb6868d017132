"""Which GEMM runs each projection of the LLM decode step (`LLM._decode`): cuBLAS or one of the skinny Triton
configs (unique_asr.kernels.fused_step.skinny), chosen by measuring them on the device at the step's batch.

Each kind is timed together with the kernel that consumes its output, since a split-K config hands that kernel
fp32 partials to sum (and cuBLAS runs its own reduce): "qkv" + rotary, "o" + residual add + RMSNorm, "gate_up"
alone, "down" (silu(gate) * up formed on load; cuBLAS: after a silu_mul launch) + add + RMSNorm. Every timing runs
the kind over all layers' weights in order, as a step does, so no weight is served from L2 that a step would read
from HBM. The fastest arm per kind wins (cuBLAS included: never slower than before, up to timing noise).
Before it is timed, a config's product over the first layer's weight is checked against cuBLAS's on the same
input (relative error <= 1e-2: bf16 rounding); one that differs, or that the compiler refuses, is no candidate.
A plan maps kind -> SkinnyConfig; a kind absent runs cuBLAS.
"""

from __future__ import annotations

import statistics

import torch

from unique_asr.kernels.fused_step import BLOCK_M, FUSED_BACKENDS, SkinnyConfig
from unique_asr.timing import timed_ms

C = SkinnyConfig
# Tiles for the decode step's shapes (hidden 2K-8K, FFN 8K-20K): enough programs to cover an H100's 132 SMs
# at least once, 4-24 K-iterations each; split-K on the narrow outputs (O, down) whose columns alone give
# too few programs. Those that do not tile a layer's shape are skipped.
# The TMA configs (weight tiles by bulk tensor copies, `stages` in flight: SkinnyConfig.tma) come first: the
# pointer-load kernel builds for sm_90 with plain LDG loads and no cp.async pipeline at any `stages` (offline
# build: 72 LDG, no LDGSTS at 128 x 128 / 4 stages), so each program has one tile in flight. Measured (H100,
# Voxtral-Mini-3B shape, graph-timed, BENCHMARKS.md "Skinny GEMMs by bulk tensor copies"): within 1-4 % of the
# pointer loads and of cuBLAS; picked for QKV at 4 rows (488 vs 513 us a step for cuBLAS).
CANDIDATES = {  # most promising first (bench_e2e --gemm-candidates N times the first N)
    "qkv": (C(64, 128, 2, tma=True), C(64, 128, 1, tma=True), C(128, 128, 2, tma=True), C(32, 256, 1, tma=True),
            C(32, 256, 1, stages=3), C(64, 128, 2), C(64, 128, 1), C(64, 256, 4, stages=3), C(128, 128, 4, warps=8)),
    "o": (C(64, 128, 4, tma=True), C(64, 128, 8, tma=True), C(128, 128, 4, tma=True), C(32, 256, 4, tma=True),
          C(32, 256, 4, stages=3), C(64, 128, 4), C(64, 256, 4, stages=3), C(64, 128, 8), C(128, 128, 8, warps=8)),
    "gate_up": (C(64, 128, 1, tma=True), C(128, 128, 1, tma=True), C(64, 128, 2, tma=True),
                C(64, 128, 1), C(32, 256, 1, stages=3), C(128, 128, 1, warps=8), C(64, 256, 1, stages=3)),
    "down": (C(64, 128, 4, tma=True), C(64, 128, 8, tma=True), C(128, 128, 4, tma=True), C(32, 256, 8, tma=True),
             C(32, 256, 8, stages=3), C(64, 128, 4), C(64, 256, 4, stages=3), C(64, 128, 8), C(128, 128, 8, warps=8)),
}


def layer_weights(llm, kind: str) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """(weight, bias) of `kind` in every layer (the fused q/k/v and gate/up concatenations)."""
    from unique_asr.models.llm import fused_linear

    if kind == "qkv":
        return [fused_linear(l.self_attn, ("q_proj", "k_proj", "v_proj"), "_qkv") for l in llm.layers]
    if kind == "gate_up":
        return [fused_linear(l.mlp, ("gate_proj", "up_proj"), "_gate_up") for l in llm.layers]
    module = {"o": lambda l: l.self_attn.o_proj, "down": lambda l: l.mlp.down_proj}[kind]
    return [(module(l).weight, module(l).bias) for l in llm.layers]


def _runner(llm, kind: str, config: SkinnyConfig | None, x: torch.Tensor, weights, ops):
    """A closure running `kind` (+ its consumer) over every layer's weights on scratch inputs."""
    import torch.nn.functional as F

    c = llm.config
    M = x.shape[0]
    positions = torch.zeros(M, dtype=torch.int64, device=x.device)
    residual = torch.zeros(M, c.hidden_size, dtype=x.dtype, device=x.device)
    norm = llm.norm.weight
    heads = c.num_heads + c.num_kv_heads

    def run() -> None:
        for w, b in weights:
            inp = x[:, : w.shape[1] * (2 if kind == "down" else 1)]
            if config is None:
                y = F.linear(ops.silu_mul(inp) if kind == "down" else inp, w, b)
            else:
                y = ops.linear(inp, w, config, silu=kind == "down")
            if kind == "qkv":
                if y.dim() == 3:
                    ops.rotary_sum(y, positions, llm.inv_freq, heads, c.head_dim, x.dtype)
                else:
                    ops.rotary(y, positions, llm.inv_freq, heads, c.head_dim)
            elif kind in ("o", "down"):
                ops.add_norm(y, residual, norm, c.rms_norm_eps)

    return run


def _error(kind: str, config: SkinnyConfig, x: torch.Tensor, weight: torch.Tensor, ops) -> float:
    """max |skinny - cuBLAS| / max |cuBLAS| of one product (partials summed)."""
    import torch.nn.functional as F

    silu = kind == "down"
    inp = x[:, : weight.shape[1] * (2 if silu else 1)]
    ref = F.linear(ops.silu_mul(inp) if silu else inp, weight).float()
    y = ops.linear(inp, weight, config, silu=silu).float()
    y = y.sum(0) if y.dim() == 3 else y
    return float((y - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def _graphed(run, device: torch.device):
    """run() compiled and warmed, then on CUDA captured in a CUDA graph (returns its replay), as the decode step
    runs: timed eagerly, a Triton launch costs more host time than a cuBLAS call (tens of us against a kernel of
    ~40), which favoured cuBLAS on the host's speed rather than the kernels'."""
    run()  # compile, warm
    if device.type != "cuda":
        return run
    torch.cuda.synchronize(device)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # as graph_step: other threads use CUDA
        run()
    return graph.replay


def plan_step_gemms(llm, batch: int, *, rounds: int = 5, candidates: dict | None = None,
                    backend: str = "triton") -> tuple[dict[str, SkinnyConfig], dict[str, dict]]:
    """Measure every candidate (default CANDIDATES) and cuBLAS per kind at `batch` rows on llm's device; returns
    (plan, timings: kind -> {arm: µs per step, or why it is no candidate})."""
    device, dtype = llm.lm_head.weight.device, llm.lm_head.weight.dtype
    if batch > BLOCK_M:
        return {}, {}
    ops = FUSED_BACKENDS[backend]
    c = llm.config
    width = max(c.hidden_size, c.num_heads * c.head_dim, 2 * c.intermediate_size)
    x = torch.randn(batch, width, device=device, dtype=dtype) * 0.1
    plan, timings = {}, {}
    for kind, configs in (candidates or CANDIDATES).items():
        weights = layer_weights(llm, kind)
        w, b = weights[0]
        arms = {"cublas": None}
        if b is None and (w.dtype in (torch.bfloat16, torch.float16) or device.type != "cuda"):
            arms |= {str(cfg): cfg for cfg in configs if cfg.fits(*w.shape)}
        times = {}
        for name, cfg in arms.items():
            try:
                if cfg is not None and (err := _error(kind, cfg, x, w, ops)) > 1e-2:
                    times[name] = f"differs from cuBLAS (relative error {err:.3g})"
                    continue
                run = _graphed(_runner(llm, kind, cfg, x, weights, ops), device)
                times[name] = statistics.median(timed_ms(run, device) * 1e3 for _ in range(rounds))
            except Exception as exc:  # noqa: BLE001  (a config the compiler refuses on this card: no candidate)
                times[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        timings[kind] = times
        ok = {n: t for n, t in times.items() if isinstance(t, float)}
        best = min(ok, key=ok.get)
        if arms[best] is not None:
            plan[kind] = arms[best]
    return plan, timings
