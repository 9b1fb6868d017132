"""End-to-end decode speed (issue 4): whole models on the paged cache, dense vs UNIQUE (vs Quest), one run per
comparison, arms alternated over rounds, medians. See BENCHMARKS.md, "End-to-end (issue 4): how to run".

    python scripts/bench_e2e.py llm-decode --out $OUT/e2e_llm.json          # 16-layer 32/8-head decoder, B 80
    python scripts/bench_e2e.py speech-llm --out $OUT/e2e_speech_llm.json   # Qwen2-Audio-7B shape, 10/60 min
    python scripts/bench_e2e.py speech-llm --shape voxtral-mini-3b --minutes 40 --batch 16 \
        --arms dense unique quest window --hf-generate --out $OUT/e2e_voxtral.json   # 16 recordings x 40 min
    python scripts/bench_e2e.py whisper-step --out $OUT/e2e_whisper_step.json
    python scripts/bench_e2e.py whisper-longform --out $OUT/e2e_longform.json
    add --profile to count kernel launches per step (proof the sparse path ran); --device cpu --tiny to smoke-test

LLM benches: random weights in bf16, the paged cache filled directly with random K/V through the cache's own
append (page statistics built by the same kernel as in decoding), then greedy decode steps: the host reserves
the step's slot (`PagedKVCache.reserve`), the rest of the step (embedding, every layer's append + attention,
lm_head, argmax fed back) replays as a CUDA graph (one per plan parity). ms/token includes the host reserve.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from functools import partial

import torch
from bench_e2e_common import (
    capture,
    guarded,
    kernel_counts,
    markdown_table,
    peak_gib,
    random_module,
    reset_peak,
    run_header,
    sync,
    time_arms,
    with_speedups,
    write_records,
)
from unique_asr.kernels.select_pages.registry import REFINABLE, STATS_DTYPES, scores_for

from unique_asr.attention import get_backend
from unique_asr.cache import PagedKVCache
from unique_asr.config import SparsityConfig
from unique_asr.models.llm import LLM, LLMConfig
from unique_asr.models.step_gemms import CANDIDATES, plan_step_gemms

# The published end-to-end setting: 16 layers, 32 query / 8 KV heads, head dim 64, hidden 2048 (a Llama-3.2-1B
# shape: FFN 8192, vocab 128256, tied embeddings).
PUBLISHED = LLMConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_layers=16, num_heads=32,
                      num_kv_heads=8, head_dim=64, rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True)
# Qwen2-Audio-7B's hub config.json (text_config overrides of transformers' Qwen2 defaults): MHA, 32 KV heads.
QWEN2_AUDIO_7B_TEXT = dict(vocab_size=156032, intermediate_size=11008, max_position_embeddings=8192,
                           rms_norm_eps=1e-5, rope_theta=10000.0)
QWEN2_AUDIO_7B_AUDIO = dict(num_mel_bins=128, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                            d_model=1280, max_source_positions=1500)
# Voxtral-Mini-3B-2507's hub config.json: a Llama decoder (30 layers, 32 query / 8 KV heads of 128) behind a
# Whisper-large-v3-shaped encoder, 4 frames stacked per audio token (375 tokens per 30 s window).
VOXTRAL_MINI_3B_TEXT = dict(vocab_size=131072, hidden_size=3072, intermediate_size=8192, num_hidden_layers=30,
                            num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=131072,
                            rms_norm_eps=1e-5, rope_theta=100000000.0)
VOXTRAL_MINI_3B_AUDIO = dict(num_mel_bins=128, num_hidden_layers=32, num_attention_heads=20, intermediate_size=5120,
                             hidden_size=1280, max_source_positions=1500)
TINY_LLM = LLMConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                     num_kv_heads=2, head_dim=16)
ANCHORS = {8192: 1.5, 16384: 2.7, 32768: 5.3}  # published end-to-end speedups over a dense vLLM model


class GreedyDecoder:
    """Greedy decode steps of `llm` on a shared `cache` with one SparsityConfig; token and position live in
    static device buffers (int64 [B]), so a step is `reserve` on the host + a graph replay (or the eager step)."""

    def __init__(self, llm: LLM, cache: PagedKVCache, sparsity: SparsityConfig, tokens: torch.Tensor,
                 positions: torch.Tensor, fused: bool = True, gemms: dict | None = None):
        self.llm, self.cache, self.sparsity, self.fused, self.gemms = llm, cache, sparsity, fused, gemms or {}
        self.tokens, self.positions = tokens, positions
        self.ones = [1] * tokens.shape[0]
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.last_parity = 0

    def step(self, plan) -> None:
        """One token per row on a reserved plan; writes the argmax back into the token buffer."""
        llm = self.llm
        llm.fused_step, llm.step_gemms = self.fused, self.gemms
        logits = llm.decode_logits(llm.embed_tokens(self.tokens), self.cache, self.positions, self.sparsity,
                                   plan=plan)
        self.tokens.copy_(logits.argmax(-1))
        self.positions.add_(1)

    def capture(self) -> None:
        """Two consecutive steps, each captured for its plan's accumulator parity (warm-up runs undone)."""
        for _ in range(2):
            plan = self.cache.reserve(self.ones)
            saved = self.tokens.clone(), self.positions.clone()
            graph = capture(lambda plan=plan: self.step(plan))
            self.tokens.copy_(saved[0])
            self.positions.copy_(saved[1])
            graph.replay()  # the step this plan reserved
            self.graphs[plan.parity] = graph
            self.last_parity = plan.parity

    def run(self, steps: int) -> None:
        for _ in range(steps):
            plan = self.cache.reserve(self.ones)
            self.last_parity = plan.parity
            if self.graphs:
                self.graphs[plan.parity].replay()
            else:
                self.step(plan)

    def replay_only(self, steps: int) -> None:
        """Device time alone: replays of the last step's graph on its own plan (same slot rewritten, no host
        reserve). Positions run ahead of the cache length afterwards (rotary only: no effect on speed)."""
        for _ in range(steps):
            self.graphs[self.last_parity].replay()


def fill_random(cache: PagedKVCache, batch: int, tokens: int, dtype: torch.dtype) -> None:
    """`tokens` random keys/values per row in every layer, appended through the cache (stats built on append)."""
    plan = cache.reserve([tokens] * batch)
    L, _, _, Hkv, D = cache.k_pool.shape
    for layer in range(L):
        k = torch.randn(batch * tokens, Hkv, D, device=cache.device, dtype=dtype)
        cache.append(layer, plan, k, torch.randn_like(k))
        del k


def cache_gib(config: LLMConfig, batch: int, tokens: int, page_size: int, modes: tuple[str, ...],
              stats_dtype: str = "pool", extra_statistics: tuple[str, ...] = ()) -> float:
    """Device bytes (GiB) of a bf16 cache for `batch` rows of `tokens`: the cache itself built on the meta
    device (nothing allocated), so K/V, every statistic `modes`, `stats_dtype` and `extra_statistics` keep
    (coded means, their scales, rmean, vmean) and the accumulators count as the real one does."""
    cache = PagedKVCache(num_layers=config.num_layers, num_pages=batch * math.ceil(tokens / page_size),
                         page_size=page_size, num_kv_heads=config.num_kv_heads, head_dim=config.head_dim,
                         max_batch=batch, max_pages_per_seq=math.ceil(tokens / page_size), dtype=torch.bfloat16,
                         device="meta", modes=modes, stats_dtype=stats_dtype, extra_statistics=extra_statistics)
    return cache.nbytes / 2**30


UNFUSED = "-unfused"  # arm suffix: the step before issue 11 item 7 (LLM._decode_unfused), for before/after
CUBLAS = "-cublas"  # arm suffix: the fused step with every projection on cuBLAS (before the skinny GEMMs)


def arm_mode(arm: str) -> str:
    """The attention mode of an arm name ("unique", "unique-unfused", "unique-cublas" -> "unique")."""
    return arm.removesuffix(UNFUSED).removesuffix(CUBLAS)


# kernel name fragments -> kind of work in a decode step (first match wins; the rest is "other")
STEP_KINDS = (("fused norm/rotary/silu", ("_add_rms_norm_kernel", "_rotary_kernel", "_silu_mul_kernel")),
              ("K/V append", ("_append_kernel",)),
              ("attention", ("_decode_kernel", "_merge_kernel")),
              ("page selection", ("_score", "_select", "_filter", "_radix", "_digit_hist", "_scan_hist", "_compact",
                                  "_threshold", "_kth_key", "_page_ids", "_sort_key", "_pick_bucket", "_mma",
                                  "_refine_kernel", "_window_kernel")),
              ("GEMM", ("gemm", "nvjet", "cutlass", "splitK", "xmma", "_skinny_kernel", "_skinny_tma_kernel")))


def step_bytes(llm: LLM, batch: int, context: int, arm: str, S: int, budget: int,
               stats_dtype: str = "pool") -> dict[str, int]:
    """Bytes a decode step must move per kind of work (its floor at full bandwidth): GEMMs read every
    projection and lm_head weight once; attention reads the K/V it attends (dense: the whole context; sparse
    arms: `budget` tokens per KV head); page selection reads each page's mean (+ std; Quest: min and max),
    one-byte means (stats_dtype fp8 / int8) as one byte an element plus their fp32 scale."""
    c, e = llm.config, llm.lm_head.weight.element_size()
    linears = [m for m in llm.modules() if isinstance(m, torch.nn.Linear)]
    gemm = sum(m.weight.numel() * m.weight.element_size() for m in linears)
    kv_token = c.num_layers * c.num_kv_heads * c.head_dim * 2 * e
    mode = arm_mode(arm)
    attended = context if mode == "dense" else min(context, budget)
    pages = -(-context // S)
    mean = c.head_dim * e if stats_dtype == "pool" else c.head_dim + 4  # one-byte codes + fp32 scale
    per_page = {"dense": 0, "window": 0, "quest": 2 * c.head_dim * e}.get(mode, mean + 4)
    d, inner, heads = c.hidden_size, c.intermediate_size, c.num_heads + 2 * c.num_kv_heads
    fused = c.num_layers * batch * e * (2 * 4 * d + 2 * (heads - c.num_kv_heads) * c.head_dim + 3 * inner)
    return {"GEMM": gemm, "attention": batch * attended * kv_token,
            "page selection": batch * c.num_layers * c.num_kv_heads * pages * per_page,
            "K/V append": batch * kv_token, "fused norm/rotary/silu": fused if not arm.endswith(UNFUSED) else 0}


def gemm_table(llm: LLM, plan_us: dict) -> dict | None:
    """The GEMM plan's measurements per kind: µs per step (the kind over all layers, with its consumer kernel:
    rotary / add+RMSNorm; down with silu_mul on cuBLAS) of cuBLAS and the chosen config, the weight bytes and
    the TB/s each makes."""
    if not plan_us:
        return None
    from unique_asr.models.step_gemms import layer_weights

    table = {}
    for kind, times in plan_us.items():
        nbytes = sum(w.numel() * w.element_size() for w, _ in layer_weights(llm, kind))
        ok = {n: t for n, t in times.items() if isinstance(t, float)}
        best = min(ok, key=ok.get)
        table[kind] = dict(bytes=nbytes, cublas_us=ok.get("cublas"), best=best, best_us=ok[best],
                           cublas_tb_s=nbytes / (ok["cublas"] * 1e-6) / 1e12 if "cublas" in ok else None,
                           best_tb_s=nbytes / (ok[best] * 1e-6) / 1e12, arms=times)
    return table


def step_kinds(profile: dict | None, moved: dict[str, int]) -> dict | None:
    """Device µs per step by kind of work (STEP_KINDS over the profiler's busiest names; "other" = the rest of
    the busy time), with the bytes each kind must move and the TB/s that makes."""
    if not profile:
        return None
    us = dict.fromkeys([k for k, _ in STEP_KINDS] + ["other"], 0.0)
    for name, t in profile["time_us_per_call"].items():
        kind = next((k for k, marks in STEP_KINDS if any(m in name for m in marks)), "other")
        us[kind] += t
    us["other"] += profile["busy_us_per_call"] - sum(profile["time_us_per_call"].values())
    return {k: {"us": round(t, 1), "bytes": moved.get(k), "tb_s": round(moved[k] / (t * 1e-6) / 1e12, 3)
                if moved.get(k) and t else None} for k, t in us.items()}


def arm_sparsity(args, arms: tuple[str, ...]) -> tuple[dict[str, SparsityConfig], tuple[str, ...], tuple[str, ...]]:
    """(each arm's SparsityConfig, the modes whose statistics the shared cache keeps, its extra statistics).
    Raises ValueError for settings SparsityConfig refuses."""
    sparsity = {arm: SparsityConfig(mode=arm_mode(arm), page_size=args.page_size, budget=args.budget,
                                    backend=args.backend, stats_dtype=args.stats_dtype,
                                    refine=args.refine if arm_mode(arm) in REFINABLE else 0) for arm in arms}
    modes = tuple(dict.fromkeys(m for m in map(arm_mode, arms) if m not in ("dense", "window"))) or ("unique",)
    extra = tuple(dict.fromkeys(s for sp in sparsity.values() for s in sp.extra_statistics))
    return sparsity, modes, extra


def planned_cache_gib(config: LLMConfig, args, batch: int, context: int) -> float:
    """`cache_gib` of the cache `decode_shape` will build for args.arms (settings SparsityConfig refuses: the
    plain cache; decode_shape then records the refusal for the shape)."""
    try:
        _, modes, extra = arm_sparsity(args, tuple(args.arms))
    except ValueError:
        modes, extra = ("unique",), ()
    return cache_gib(config, batch, context, args.page_size, modes, args.stats_dtype, extra)


def decode_shape(llm: LLM, args, batch: int, context: int, arms: tuple[str, ...], device, dtype) -> list[dict]:
    """Fill a cache with `context` random tokens per row, time every arm's greedy steps; one record per arm."""
    c, S = llm.config, args.page_size
    spare = (args.rounds + 1) * args.steps * len(arms) + (8 + 2 * args.profile_steps) * len(arms)
    pages_per_row = math.ceil((context + spare) / S) + 1
    sparsity, modes, extra = arm_sparsity(args, arms)
    cache = PagedKVCache(num_layers=c.num_layers, num_pages=batch * pages_per_row, page_size=S,
                         num_kv_heads=c.num_kv_heads, head_dim=c.head_dim, max_batch=batch,
                         max_pages_per_seq=pages_per_row, dtype=dtype, device=device, modes=modes,
                         stats_dtype=args.stats_dtype, extra_statistics=extra)
    fill_random(cache, batch, context, dtype)
    tokens = torch.randint(c.vocab_size, (batch,), device=device)
    positions = torch.full((batch,), context, dtype=torch.int64, device=device)
    graphs = device.type == "cuda" and not args.no_graphs
    llm.fuse()
    candidates = {k: v[: args.gemm_candidates] for k, v in CANDIDATES.items()}
    plan, plan_us = plan_step_gemms(llm, batch, candidates=candidates) if device.type == "cuda" else ({}, {})
    print(f"B={batch} step GEMMs: " + (", ".join(f"{k} {v}" for k, v in plan.items()) or "cuBLAS"), flush=True)
    decoders, counts, graph_counts = {}, {}, {}
    for arm in arms:
        sp = sparsity[arm]
        d = decoders[arm] = GreedyDecoder(llm, cache, sp, tokens, positions, fused=not arm.endswith(UNFUSED),
                                          gemms={} if arm.endswith(CUBLAS) else plan)
        if args.profile:
            counts[arm] = kernel_counts(lambda d=d: d.run(1), args.profile_steps, device)  # eager steps
        if graphs:
            d.capture()
            if args.profile:  # the replayed graph's kernels, as far as the profiler sees into graphs
                graph_counts[arm] = kernel_counts(lambda d=d: d.run(1), args.profile_steps, device)
    med, samples = time_arms({a: (lambda d=d: d.run(args.steps)) for a, d in decoders.items()}, args.rounds,
                             device, per=args.steps)
    device_ms = time_arms({a: (lambda d=d: d.replay_only(args.steps)) for a, d in decoders.items()}, args.rounds,
                          device, per=args.steps)[0] if graphs else {}
    backend = get_backend(args.backend, device, dtype).name
    recs = [dict(arm=a, B=batch, N=context, context_end=int(cache.lengths.max()), layers=c.num_layers,
                 H=c.num_heads, Hkv=c.num_kv_heads, D=c.head_dim, S=S, budget=args.budget,
                 stats_dtype=args.stats_dtype, refine=sparsity[a].refine,
                 median_ms=med[a], round_ms=samples[a], tokens_per_s=batch / (med[a] * 1e-3), steps=args.steps,
                 device_ms=device_ms.get(a), device_tokens_per_s=batch / (device_ms[a] * 1e-3) if graphs else None,
                 graphs=graphs, backend=backend, dtype=str(dtype), peak_gib=peak_gib(device),
                 cache_gib=cache.nbytes / 2**30, kernels=counts.get(a),
                 kernels_graph=graph_counts.get(a),
                 step_kinds=step_kinds(counts.get(a), step_bytes(llm, batch, context, a, S, args.budget,
                                                                          args.stats_dtype)),
                 step_gemms=None if a.endswith(UNFUSED) else
                 {k: str(v) for k, v in ({} if a.endswith(CUBLAS) else plan).items()} or "cuBLAS",
                 gemm_plan=gemm_table(llm, plan_us))
            for a in arms]
    del decoders, cache
    return recs


def memory_limit_gib(device: torch.device, max_gib: float | None) -> float:
    """GiB a shape may need: --max-gib, capped at 95 % of the card's memory (an 80 GB H100 is not an H200)."""
    card = torch.cuda.get_device_properties(device).total_memory / 2**30 * 0.95
    return card if max_gib is None else min(max_gib, card)


def memory_skip(need: float, device: torch.device, max_gib: float | None, what: str, **shape) -> dict | None:
    """A `skipped` record (printed) when a shape needing `need` GiB does not fit; None when it does or off CUDA."""
    if device.type != "cuda":
        return None
    limit = memory_limit_gib(device, max_gib)
    if need <= limit:
        return None
    rec = dict(arm="skipped", **shape, need_gib=need, max_gib=limit,
               skipped=f"needs ~{need:.0f} GiB of {limit:.0f} GiB usable ({what})")
    print(rec["skipped"], " ".join(f"{k}={v}" for k, v in shape.items()), flush=True)
    return rec


def run_llm_decode(args) -> list[dict]:
    """Subcommand llm-decode: the published end-to-end setting, B x N sweep; shapes that do not fit the card
    (or --max-gib) are recorded as skipped with the memory they need."""
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(args.seed)
    config = TINY_LLM if args.tiny else PUBLISHED
    llm = random_module(lambda: LLM(config), dtype, device)
    records = [run_header("llm-decode", device, args) | {"model": dataclasses.asdict(config)}]
    weights_gib = sum(p.numel() * p.element_size() for p in llm.parameters()) / 2**30
    for batch in args.batch:
        for context in args.contexts:
            # the cache holds context + the timed steps' spare pages; graphs and activations: ~2 GiB
            need = weights_gib + planned_cache_gib(config, args, batch, context) * 1.05 + 2.0
            skip = memory_skip(need, device, args.max_gib, f"bf16 K/V of {config.num_layers} layers + stats "
                               "+ weights", B=batch, N=context)
            if skip:
                records.append(skip)
                write_records(records, args.out)
                continue
            reset_peak(device)
            recs = guarded(partial(decode_shape, llm, args, batch, context, tuple(args.arms), device, dtype),
                           B=batch, N=context)
            for r in recs:
                r["anchor_speedup"] = ANCHORS.get(context) if r["arm"] == "unique" else None
            records += with_speedups(with_speedups(recs, "dense", lambda r: (r["B"], r["N"])), "dense",
                                     lambda r: (r["B"], r["N"]), field="device_ms")
            print_shape(recs)
            write_records(records, args.out)
    return records


def speech_llm_config(tiny: bool, shape: str = "qwen2-audio-7b"):
    """(SpeechLLMConfig, audio tokens per second) of the Qwen2-Audio-7B or Voxtral-Mini-3B shape (or a tiny one
    for smoke runs), through the weight mapping's own config reader."""
    from transformers import Qwen2AudioConfig, VoxtralConfig

    from unique_asr.models.speech_llm_checkpoint import config_from_hf

    if shape == "voxtral-mini-3b" and not tiny:
        hf = VoxtralConfig(text_config=dict(model_type="llama", **VOXTRAL_MINI_3B_TEXT),
                           audio_config=dict(model_type="voxtral_encoder", **VOXTRAL_MINI_3B_AUDIO), audio_token_id=24)
        config = config_from_hf(hf)
        return config, config.tokens_per_window / 30.0
    if tiny:
        text = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=4)
        audio = dict(num_mel_bins=80, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=128, d_model=32,
                     max_source_positions=1500)
        hf = Qwen2AudioConfig(text_config=text, audio_config=audio, audio_token_id=255)
    else:
        hf = Qwen2AudioConfig(text_config=QWEN2_AUDIO_7B_TEXT, audio_config=QWEN2_AUDIO_7B_AUDIO)
    config = config_from_hf(hf)
    return config, config.tokens_per_window / 30.0  # a window is 30 s of audio


def run_speech_llm(args) -> list[dict]:
    """Subcommand speech-llm: decode tokens/s with minutes of audio tokens in context; shapes that do not fit
    --max-gib are recorded as skipped with the memory they need."""
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(args.seed)
    config, tok_per_s = speech_llm_config(args.tiny, args.shape)
    c = config.llm
    llm = random_module(lambda: LLM(c), dtype, device)
    weights_gib = sum(p.numel() * p.element_size() for p in llm.parameters()) / 2**30
    records = [run_header("speech-llm", device, args) | {
        "model": config.to_dict(), "audio_tokens_per_s": tok_per_s, "mha": c.num_kv_heads == c.num_heads,
        "llm_weights_gib": weights_gib}]
    for minutes in args.minutes:
        context = round(minutes * 60 * tok_per_s)
        for batch in args.batch:
            need = weights_gib + planned_cache_gib(c, args, batch, context) * 1.02 + 2.0
            skip = memory_skip(need, device, args.max_gib, f"bf16 K/V of {c.num_layers} layers x "
                               f"{c.num_kv_heads} KV heads + stats + weights", minutes=minutes, B=batch, N=context)
            if skip:
                records.append(skip)
                continue
            reset_peak(device)
            recs = guarded(partial(decode_shape, llm, args, batch, context, tuple(args.arms), device, dtype),
                           B=batch, N=context)
            if args.hf_generate:
                print_shape(recs)  # ours first, in case the transformers arm outlasts the call
                write_records(records + recs, args.out)
                recs += guarded(partial(hf_decode_shape, llm, args, batch, context, device, dtype),
                                B=batch, N=context)
            for r in recs:
                r["minutes"] = minutes
            records += with_speedups(with_speedups(recs, "dense", lambda r: (r["B"], r["N"])), "dense",
                                     lambda r: (r["B"], r["N"]), field="device_ms")
            print_shape(recs)
            write_records(records, args.out)
    return records


def hf_decode_shape(llm: LLM, args, batch: int, context: int, device, dtype) -> list[dict]:
    """transformers' arm: `LlamaForCausalLM` / `Qwen2ForCausalLM` holding the same weights as `llm`, greedy steps
    over a `DynamicCache` (what `generate` uses by default) holding `context` random K/V per row; eager, as
    `generate` runs. ms/token per step like the other arms."""
    import transformers as tf

    c = llm.config
    qwen = c.qkv_bias and not c.o_bias  # Qwen2: q/k/v biases only; Llama: attention_bias on all four
    kind = "Qwen2" if qwen else "Llama"
    extra = {} if qwen else {"attention_bias": c.o_bias, "head_dim": c.head_dim}
    hf_config = getattr(tf, f"{kind}Config")(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads, num_key_value_heads=c.num_kv_heads,
        rms_norm_eps=c.rms_norm_eps, rope_theta=c.rope_theta, max_position_embeddings=max(context * 2, 4096),
        tie_word_embeddings=c.tie_word_embeddings, **extra)
    hf_config._attn_implementation = "sdpa"
    with torch.device("meta"):
        hf = getattr(tf, f"{kind}ForCausalLM")(hf_config)
    state = {f"model.{k}": v for k, v in llm.state_dict().items() if not k.startswith("lm_head")}
    state["lm_head.weight"] = llm.lm_head.weight
    hf.load_state_dict(state, strict=False, assign=True)
    rotary = type(hf.model.rotary_emb)
    hf.model.rotary_emb = rotary(config=hf_config, device=device)  # its inv_freq buffer was built on meta
    hf = hf.eval()
    missing = [n for n, p in list(hf.named_parameters()) + list(hf.named_buffers()) if p.is_meta]
    if missing:
        raise RuntimeError(f"transformers arm: weights not mapped: {missing[:3]}")
    cache = tf.DynamicCache(config=hf_config)
    gen = torch.Generator(device).manual_seed(args.seed)
    for layer in range(c.num_layers):
        shape = (batch, c.num_kv_heads, context, c.head_dim)
        cache.update(torch.randn(shape, device=device, dtype=dtype, generator=gen),
                     torch.randn(shape, device=device, dtype=dtype, generator=gen), layer)
    tokens = torch.randint(c.vocab_size, (batch, 1), device=device)

    def run(steps: int) -> None:
        nonlocal tokens
        for _ in range(steps):
            logits = hf(input_ids=tokens, past_key_values=cache, use_cache=True).logits
            tokens = logits[:, -1].argmax(-1, keepdim=True)

    run(2)  # warm-up
    med, samples = time_arms({"transformers": lambda: run(args.steps)}, args.rounds, device, per=args.steps)
    rec = dict(arm="transformers", B=batch, N=context, context_end=cache.get_seq_length(), layers=c.num_layers,
               H=c.num_heads, Hkv=c.num_kv_heads, D=c.head_dim, median_ms=med["transformers"],
               round_ms=samples["transformers"], tokens_per_s=batch / (med["transformers"] * 1e-3),
               steps=args.steps, graphs=False, backend="transformers sdpa + DynamicCache", dtype=str(dtype),
               peak_gib=peak_gib(device))
    cache = None  # the rows' K/V go back before the prefill
    if args.hf_prefill:
        rec |= hf_prefill(hf, hf_config, context, args, device, dtype)
    return [rec]


def hf_prefill(hf, hf_config, context: int, args, device, dtype) -> dict:
    """transformers' prefill of one row of `context` tokens (random embeddings) into a fresh DynamicCache, as
    `generate` runs it before its first step (sdpa, causal, logits of the last position only): ms per row,
    median over --rounds (one untimed run first)."""
    import transformers as tf

    emb = torch.randn(1, context, hf_config.hidden_size, device=device, dtype=dtype) * 0.02

    def prefill() -> None:
        hf(inputs_embeds=emb, past_key_values=tf.DynamicCache(config=hf_config), use_cache=True, logits_to_keep=1)

    med, samples = time_arms({"prefill": prefill}, args.rounds, device)
    return dict(prefill_ms_per_row=med["prefill"], prefill_round_ms=samples["prefill"], prefill_tokens=context)


def print_shape(recs: list[dict]) -> None:
    for r in recs:
        if r.get("step_kinds"):
            print(f"B={r['B']} N={r['N']} {r['arm']}: " + "; ".join(
                f"{k} {v['us']} us" + (f" {v['tb_s']} TB/s" if v["tb_s"] else "") for k, v in r["step_kinds"].items()),
                flush=True)
    for r in recs:
        if "error" in r:
            print(f"B={r['B']} N={r['N']}: {r['error']}", flush=True)
            continue
        device = f" device {r['device_ms']:.3f} ms" if r.get("device_ms") else ""
        print(f"{r['arm']:>8} B={r['B']:<3} N={r['N']:<6} {r['median_ms']:9.3f} ms/step{device} "
              f"{r['tokens_per_s']:10.1f} tok/s  x{r.get('speedup_vs_dense', float('nan')):.2f} vs dense "
              f"graphs={r['graphs']} peak={r['peak_gib']}", flush=True)


def common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cuda", help="cuda (the benchmark) or cpu (smoke test: no graphs)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", help="JSON file of the records")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", action="store_true", help="count kernel launches per step with torch.profiler")
    p.add_argument("--profile-steps", type=int, default=3)
    p.add_argument("--no-graphs", action="store_true", help="eager steps on CUDA too")
    p.add_argument("--tiny", action="store_true", help="tiny model shapes (smoke tests)")


def llm_options(p: argparse.ArgumentParser, arms: list[str], batch: list[int]) -> None:
    modes = ["dense", *scores_for("select"), "window"]
    p.add_argument("--arms", nargs="+", default=arms,
                   choices=modes + [m + suffix for m in modes for suffix in (UNFUSED, CUBLAS)],
                   help=f"attention modes; the suffix {UNFUSED} runs the step before its fusion, {CUBLAS} the "
                   "fused step with cuBLAS GEMMs only (before the skinny GEMMs): before/after arms")
    p.add_argument("--batch", type=int, nargs="+", default=batch)
    p.add_argument("--page-size", type=int, default=8)
    p.add_argument("--budget", type=int, default=512)
    p.add_argument("--steps", type=int, default=16, help="decode steps per timed call")
    p.add_argument("--backend", default="auto", help="attention backend (auto: sparse-triton on CUDA)")
    p.add_argument("--gemm-candidates", type=int, default=None,
                   help="time only the first N skinny GEMM configs per projection (default: all)")
    p.add_argument("--stats-dtype", default="pool", choices=STATS_DTYPES,
                   help="page key means in the KV dtype or as fp8 / int8 codes (SparsityConfig.stats_dtype)")
    p.add_argument("--refine", type=int, default=0,
                   help="with fp8 / int8 means: re-rank top_k + REFINE candidates by the KV-dtype means "
                        "(SparsityConfig.refine; scored arms only)")


def parse_args(argv=None):
    from bench_e2e_whisper import longform_options, run_whisper_longform, run_whisper_step, step_options

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="bench", required=True)
    q = sub.add_parser("llm-decode", help="16-layer 32/8-head decoder, batch 80, 8K/16K/32K context")
    common_options(q)
    llm_options(q, ["dense", "unique", "quest"], [80])
    q.add_argument("--contexts", type=int, nargs="+", default=[8192, 16384, 32768])
    q.add_argument("--max-gib", type=float, default=None,
                   help="skip shapes needing more device memory (default: 95 %% of the card's)")
    q.set_defaults(func=run_llm_decode)
    q = sub.add_parser("speech-llm", help="Qwen2-Audio-7B shape, 10 / 60 min of audio tokens in context")
    common_options(q)
    llm_options(q, ["dense", "unique"], [1, 2, 8, 16])
    q.add_argument("--minutes", type=float, nargs="+", default=[10.0, 60.0])
    q.add_argument("--shape", default="qwen2-audio-7b", choices=["qwen2-audio-7b", "voxtral-mini-3b"])
    q.add_argument("--hf-generate", action="store_true",
                   help="also time transformers' greedy steps (DynamicCache, eager) on the same weights")
    q.add_argument("--hf-prefill", action="store_true",
                   help="with --hf-generate: also time transformers' prefill of one row of the whole context")
    q.add_argument("--max-gib", type=float, default=None,
                   help="skip shapes needing more device memory (default: 95 %% of the card's)")
    q.set_defaults(func=run_speech_llm)
    q = sub.add_parser("whisper-step", help="captured Whisper decode step, batch 64, small and base shapes")
    common_options(q)
    step_options(q)
    q.set_defaults(func=run_whisper_step)
    q = sub.add_parser("whisper-longform", help="RTFx of batched long-form transcription vs transformers")
    common_options(q)
    longform_options(q)
    q.set_defaults(func=run_whisper_longform)
    q = sub.add_parser("report", help="print BENCHMARKS.md tables of result JSON files (no device needed)")
    q.add_argument("files", nargs="+")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.bench == "report":
        for path in args.files:
            with open(path) as f:
                print(f"{path}\n\n{markdown_table(json.load(f))}\n")
        return 0
    with torch.no_grad():
        records = args.func(args)
    sync(torch.device(args.device))
    write_records(records, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
