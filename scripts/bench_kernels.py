"""H200 decode-attention kernel benchmark (issue 3): the UNIQUE sparse step against dense decode arms.

One run sweeps the published setting (H = 32, Hkv = 8, D = 128, bf16, S = 8, budget T = 512 -> k = 64)
over N in {8K..128K} and B in {1, 16, 80}. Every arm runs as a CUDA graph replay, timed with events by
triton.testing.do_bench (which clears L2 by zeroing a 256 MB buffer before every replay), arms alternated
in rotating order over several rounds; the median of the round medians is reported.

Arms: sdpa_flash / sdpa_cudnn (contiguous [B, Hkv, N, D] cache; the G query heads of a KV head enter as G
query rows, which is exact for one decode query), flashinfer_dense (BatchDecodeWithPagedKVCacheWrapper
over our pools), triton_dense_paged (our kernel over all pages), unique_step (score + top-k + sparse
attention) with its components unique_select / unique_attention, flashinfer_sparse (FlashInfer fed our
selected pages), quest_step / quest_select (Quest min/max scores, same budget, our attention).
Page-stat maintenance (issue 3: < 5 % of a dense step at 32K): append_kv_stats / append_kv_plain, one layer's
one-token decode append with and without the statistics update (see `append_arms`); per shape a
stats_maintenance record holds their difference and its share of the best dense arm.

    python scripts/bench_kernels.py --out $OUT/kernels_h200.json
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import triton.testing
from torch.nn.attention import SDPBackend, sdpa_kernel
from unique_asr.kernels._checks import CODE_DTYPES
from unique_asr.kernels.page_stats.naive import quantise_mean
from unique_asr.kernels.select_pages.naive import page_scores_naive
from unique_asr.kernels.select_pages.registry import CODE_MAX, REFINABLE, SCORES, scores_for
from unique_asr.kernels.select_pages.triton import SelectConfig
from unique_asr.kernels.sparse_decode import (
    dense_paged_decode_attention,
    sparse_decode_attention,
    sparse_decode_attention_naive,
)

from unique_asr.cache.paged_kv import PagedKVCache

sys.path.insert(0, str(Path(__file__).resolve().parent))
from launch_configs import add_decode_shape, one_config  # noqa: E402

DENSE_ARMS = ("sdpa_flash", "sdpa_cudnn", "flashinfer_dense", "triton_dense_paged")
APPEND_ARMS = ("append_kv_stats", "append_kv_plain")
# Selection arms beside each score's default launch: the whole-row select and the split-filter path
# forced (SelectConfig.filter_split; the default picks one by shape), so one run compares them.
# The default launch scores with TC (SelectConfig.tc, bf16 products; 1 pipeline stage for bf16 means and on
# the split-filter path); beside it: the tf32 dot (dot) and FMA (fma) scoring it replaced, the scores stored
# without the L2 evict_last priority (nol2), and 1 / 3 pipeline stages forced (stages1 / stages3).
# (Measured once and dropped: TC with 1024-page programs, 4 stages, 128-page tiles on 8 warps were 2-8 %
# slower; kernels_h100_issue12_tc.json.)
# The whole-row top-k: the prefilter with 2-bit k-th steps over its candidates is the default
# (SelectConfig.prefilter / kth_bits); legacy = the single-read 1-bit bisection it replaced (at batch 1 the
# split-filter path, which both share), bits1 = the prefilter with 1-bit steps.
SELECT_VARIANTS = {"rowsel": {"filter_split": 0}, "filter": {"filter_split": 512}, "dot": {"tc": False},
                   "fma": {"tc": False, "fma": True}, "nol2": {"scores_l2": False},
                   "stages1": {"score_stages": 1}, "stages3": {"score_stages": 3},
                   "legacy": {"prefilter": False, "kth_bits": 1}, "bits1": {"kth_bits": 1},
                   "f16": {"fp8_f16": True}, "radix": {"split_radix": True}, "bound": {"merge_bound": True},
                   "radixbound": {"split_radix": True, "merge_bound": True}, "kth8": {"kth_bits": 8},
                   "i8wide": {"int8_mma": False}}
# f16: one-byte means (fp8 / int8 codes) widened to fp16 for the TC products (SelectConfig.fp8_f16; the default
# widens to bf16).
# radix / bound / radixbound: the split filter's and merge's k-th by radix passes, the merge's candidates
# bounded first (batch 1); kth8: the prefilter's k-th by radix passes (batch 80); i8wide: int8 codes widened to
# bf16 for the products, the default before they went to the integer tensor cores (SelectConfig.int8_mma; other
# means: unchanged, the run's control).
STEP_VARIANTS = ("dot", "legacy", "f16", "radix", "bound", "radixbound", "kth8", "i8wide")  # also timed as steps
# Re-ranking (SparsityConfig.refine, --refine M): arms '<score>_<code>_select_refine' / '_step_refine' select
# k + M pages from the one-byte codes, then keep k by the bf16 means (`refine_pages`): the codes' scoring bytes
# plus (k + M) bf16 means per (sequence, KV head).
REFINE = "refine"
# The scoring pass alone (`score_pages`: split scoring kernel, no top-k), default launch and these variants:
# with the select arms it splits score + top-k into its two parts.
SCORE_VARIANTS = ("dot", "f16", "i8wide")


def sparse_arm(arm: str) -> dict | None:
    """What a sparse arm name means: {"score", "code", "step", "variant", "only"} for
    '<score>[_<code>]_select[_<variant>]', '<score>[_<code>]_step[_<variant>]' and
    '<score>[_<code>]_score[_<variant>]' (code: None, or fp8 / int8 one-byte means; only: the scoring pass
    without the top-k); None for any other arm."""
    parts = arm.split("_")
    if parts[0] not in SCORES:
        return None
    code = parts[1] if len(parts) > 1 and parts[1] in CODE_MAX else None
    rest = parts[1 + (code is not None):]
    if not rest or rest[0] not in ("select", "step", "score"):
        return None
    return dict(score=parts[0], code=code, step=rest[0] == "step",
                variant="_".join(rest[1:]) or None, only=rest[0] == "score")


def load_selector():
    """The fused score + top-k kernel when present, else its PyTorch twin; the name records which, with
    the sha256 of the kernel source that ran (the JSON ties numbers to code)."""
    try:
        from unique_asr.kernels.select_pages import select_pages
        from unique_asr.kernels.select_pages import triton as source
        name = "triton"
    except ImportError:
        from unique_asr.kernels.select_pages import naive as source
        from unique_asr.kernels.select_pages.naive import select_pages_naive as select_pages
        name = "naive"
    with open(source.__file__, "rb") as f:
        return select_pages, f"{name} sha256:{hashlib.sha256(f.read()).hexdigest()[:12]}"


def source_digest() -> str:
    """sha256 (12 hex) of the package and kernel sources (unique_asr/, kernels/ *.py, path-sorted): names the
    code that ran even where the checkout's git metadata is stale or missing (a copied working tree)."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(p for d in ("unique_asr", "kernels") for p in (root / d).rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def code_version() -> str:
    """git HEAD of the checkout (plus '+dirty' when it has local changes; 'unknown' without git) and the
    source digest, e.g. '4a33e90 src 1f2e3d4c5b6a'."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip()
        git = head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        git = "unknown"
    return f"{git} src {source_digest()}"


def load_flashinfer():
    try:
        import flashinfer

        return flashinfer, None
    except Exception as exc:  # benchmark-only dependency: report why it is missing, keep SDPA as anchor
        return None, f"{type(exc).__name__}: {exc}"


def build_state(B, N, H, Hkv, D, S, dtype, contiguous=True):
    """Pools [P, S, Hkv, D] with pages scattered at random, their page stats, and a contiguous copy."""
    dev = "cuda"
    n_pages = N // S
    P = B * n_pages
    st = {"k_pool": torch.randn(P, S, Hkv, D, device=dev, dtype=dtype),
          "v_pool": torch.randn(P, S, Hkv, D, device=dev, dtype=dtype)}
    st["table"] = torch.randperm(P, device=dev).to(torch.int32).view(B, n_pages)
    st["lengths"] = torch.full((B,), N, dtype=torch.int32, device=dev)
    st["q"] = torch.randn(B, H, D, device=dev, dtype=dtype)
    mean = torch.empty(P, Hkv, D, device=dev, dtype=dtype)
    std = torch.empty(P, Hkv, device=dev, dtype=torch.float32)
    kmin, kmax = torch.empty_like(mean), torch.empty_like(mean)
    chunk = 1 << 16
    for s in range(0, P, chunk):  # page stats by their definition (design.md §1), chunked to bound memory
        k = st["k_pool"][s:s + chunk].float()
        mu = k.mean(1)
        mean[s:s + chunk] = mu.to(dtype)
        std[s:s + chunk] = ((k - mu[:, None]) ** 2).sum(-1).mean(1).sqrt()
        kmin[s:s + chunk], kmax[s:s + chunk] = k.amin(1).to(dtype), k.amax(1).to(dtype)
    for code, code_dtype in CODE_DTYPES.items():  # one-byte means + per-(page, head) scale, as the cache keeps them
        st[f"mean_{code}"] = torch.empty(P, Hkv, D, device=dev, dtype=code_dtype)
        st[f"scale_{code}"] = torch.empty(P, Hkv, device=dev, dtype=torch.float32)
        for s in range(0, P, chunk):
            st[f"mean_{code}"][s:s + chunk], st[f"scale_{code}"][s:s + chunk] = quantise_mean(
                mean[s:s + chunk].float(), code)
    st.update(mean=mean, std=std, kmin=kmin, kmax=kmax)
    if not contiguous:
        return st
    kc = torch.empty(B, Hkv, N, D, device=dev, dtype=dtype)
    vc = torch.empty_like(kc)
    for b in range(B):
        ids = st["table"][b].long()
        kc[b] = st["k_pool"][ids].permute(2, 0, 1, 3).reshape(Hkv, N, D)
        vc[b] = st["v_pool"][ids].permute(2, 0, 1, 3).reshape(Hkv, N, D)
    st.update(kc=kc, vc=vc)
    return st


def flashinfer_wrappers(fi, st, ids, H, Hkv, D, S):
    """(dense, sparse) FlashInfer decode wrappers planned for CUDA-graph replay.

    dense: our NHD pools and page table. sparse: each (sequence, KV head) is one request with one KV head
    over the contiguous cache viewed as HND pages [B*Hkv*N/S, 1, S, D]; its pages are our selection."""
    B, n_pages = st["table"].shape
    dev = st["q"].device
    out = []
    inv = torch.empty(B * n_pages, dtype=torch.int64, device=dev)  # physical page -> logical index
    inv[st["table"].flatten().long()] = torch.arange(n_pages, device=dev).repeat(B)
    seq = torch.arange(B * Hkv, device=dev).view(B, Hkv, 1)
    sparse_idx = (seq * n_pages + inv[ids.long()]).flatten().to(torch.int32)
    plans = [
        ("NHD", st["table"].flatten(), B, Hkv, H, "flashinfer_dense"),
        ("HND", sparse_idx, B * Hkv, 1, H // Hkv, "flashinfer_sparse"),
    ]
    for layout, indices, n_req, n_kv, n_qo, _ in plans:
        per = indices.numel() // n_req
        indptr = torch.arange(0, n_req + 1, device=dev, dtype=torch.int32) * per
        last = torch.full((n_req,), S, dtype=torch.int32, device=dev)
        ws = torch.zeros(256 << 20, dtype=torch.uint8, device=dev)
        w = fi.BatchDecodeWithPagedKVCacheWrapper(
            ws, layout, use_cuda_graph=True, paged_kv_indptr_buffer=torch.empty_like(indptr),
            paged_kv_indices_buffer=torch.empty_like(indices), paged_kv_last_page_len_buffer=torch.empty_like(last))
        w.plan(indptr, indices, last, n_qo, n_kv, D, S, q_data_type=st["q"].dtype, kv_data_type=st["q"].dtype)
        out.append(w)
    return out


def as_dict(cfg) -> dict:
    return cfg._asdict() if hasattr(cfg, "_asdict") else dataclasses.asdict(cfg)


def append_arms(B, Hkv, D, S, dtype=torch.bfloat16, device="cuda"):
    """One layer's one-token decode append for B sequences, with and without page statistics, replay-safe.

    A one-layer PagedKVCache (UNIQUE statistics: mean [P, Hkv, D], std [P, Hkv]) holds one page per
    sequence, prefilled with S - 1 tokens; one reserve() of a token per sequence plans the write into the
    last slot of each open page (n_old = S - 1: the Welford merge reads the accumulator, the page closes).
    Every call redoes that same write from the same accumulator, so replays neither move nor overflow.
    append_kv_stats: cache.append, the fused K/V write + statistics update a decode step runs per layer.
    append_kv_plain: the same k, v [B, Hkv, D] written to the same slots by index_copy_, no statistics.
    Returns (name -> zero-argument callable, the cache).
    """
    cache = PagedKVCache(num_layers=1, num_pages=B, page_size=S, num_kv_heads=Hkv, head_dim=D, max_batch=B,
                         dtype=dtype, device=device)
    prefill = torch.randn(2, B * (S - 1), Hkv, D, dtype=dtype, device=cache.device)
    cache.extend([S - 1] * B, [(prefill[0], prefill[1])])
    plan = cache.reserve([1] * B)
    k, v = torch.randn(2, B, Hkv, D, dtype=dtype, device=cache.device)
    layer = cache.layer(0)
    slots = cache.page_table[:, 0].long() * S + S - 1                     # [B] flat slot of each new token
    k_flat, v_flat = layer.k_pool.view(-1, Hkv, D), layer.v_pool.view(-1, Hkv, D)
    arms = {"append_kv_stats": lambda: cache.append(0, plan, k, v),
            "append_kv_plain": lambda: (k_flat.index_copy_(0, slots, k), v_flat.index_copy_(0, slots, v))}
    return arms, cache


def make_arms(st, args, select, fi, configs):
    """name -> zero-argument callable (each later captured in its own CUDA graph)."""
    q, kp, vp, table, lens = st["q"], st["k_pool"], st["v_pool"], st["table"], st["lengths"]
    B, H, D = q.shape
    Hkv, S, k = kp.shape[2], kp.shape[1], args.budget // args.page_size
    G = H // Hkv

    base = configs.get("select") or SelectConfig()

    def sel(mode, code=None, variant=None, only=False, k=k):
        if variant == REFINE:  # k + M candidates from the codes, the best k of them by the bf16 means
            cand = sel(mode, code, k=k + args.refine)
            return refine(q, cand, table, lens, st["mean"], st["std"], k=k, page_size=S, mode=mode)
        cfg = dataclasses.replace(base, **SELECT_VARIANTS[variant]) if variant else base
        mean, scale = (st[f"mean_{code}"], st[f"scale_{code}"]) if code else (st["mean"], None)
        kw = {"config": cfg} if select_is_triton(select) else {}
        if only:
            from unique_asr.kernels.select_pages import score_pages

            return score_pages(q, table, lens, mean, st["std"], page_size=S, mode=mode, kmin=st["kmin"],
                               kmax=st["kmax"], scale=scale, scores=score_buf, **kw)
        return select(q, table, lens, mean, st["std"], k=k, page_size=S, mode=mode, kmin=st["kmin"],
                      kmax=st["kmax"], scale=scale, **kw)

    score_buf = torch.empty(B, Hkv, table.shape[1], dtype=torch.float32, device=q.device)
    if select_is_triton(select):
        from unique_asr.kernels.select_pages import refine_pages as refine
    else:
        from unique_asr.kernels.select_pages import refine_pages_naive as refine

    ids = sel("unique")
    qs = q.view(B, Hkv, G, D)
    arms = {}
    if "kc" in st:  # the contiguous copy SDPA reads (left out where it does not fit the card)
        for name, backend in (("sdpa_flash", SDPBackend.FLASH_ATTENTION),
                              ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION)):
            def run(backend=backend):
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(qs, st["kc"], st["vc"])
            arms[name] = run
    cs, cd = configs.get("sparse"), configs.get("dense")
    arms["triton_dense_paged"] = lambda: dense_paged_decode_attention(q, kp, vp, table, lens, config=cd)
    arms["unique_attention"] = lambda: sparse_decode_attention(q, kp, vp, ids, table, lens, config=cs)
    for score in args.scores:
        for code in (None, *args.codes) if "mean" in SCORES[score].stats else (None,):
            tag = f"{score}_{code}" if code else score
            arms[f"{tag}_select"] = lambda score=score, code=code: sel(score, code)
            arms[f"{tag}_step"] = lambda score=score, code=code: sparse_decode_attention(
                q, kp, vp, sel(score, code), table, lens, config=cs)
            if code and args.refine and score in REFINABLE:
                arms[f"{tag}_select_{REFINE}"] = lambda score=score, code=code: sel(score, code, REFINE)
                arms[f"{tag}_step_{REFINE}"] = lambda score=score, code=code: sparse_decode_attention(
                    q, kp, vp, sel(score, code, REFINE), table, lens, config=cs)
        if score == "unique" and select_is_triton(select):
            # per means dtype of the run: the scoring pass alone (default launch), then the launch variants (f16
            # widens fp8 and int8 codes alike; with pool-dtype means it changes nothing and is the run's control)
            for code in (None, *args.codes):
                tag = f"unique_{code}" if code else "unique"
                arms[f"{tag}_score"] = lambda code=code: sel("unique", code, only=True)
                for variant in variants(args, SELECT_VARIANTS):
                    arms[f"{tag}_select_{variant}"] = lambda v=variant, code=code: sel("unique", code, v)
                for variant in variants(args, STEP_VARIANTS):
                    arms[f"{tag}_step_{variant}"] = lambda v=variant, code=code: sparse_decode_attention(
                        q, kp, vp, sel("unique", code, v), table, lens, config=cs)
                for variant in variants(args, SCORE_VARIANTS):
                    arms[f"{tag}_score_{variant}"] = lambda v=variant, code=code: sel("unique", code, v, only=True)
    if fi is not None:
        w_dense, w_sparse = flashinfer_wrappers(fi, st, ids, H, Hkv, D, S)
        arms["flashinfer_dense"] = lambda: w_dense.run(q, (kp, vp))
        kc_pages = st["kc"].view(B * Hkv * (st["kc"].shape[2] // S), 1, S, D)
        vc_pages = st["vc"].view_as(kc_pages)
        arms["flashinfer_sparse"] = lambda: w_sparse.run(qs.reshape(B * Hkv, G, D), (kc_pages, vc_pages))
    arms.update(append_arms(B, Hkv, D, S, q.dtype, q.device)[0])
    return arms, ids


def variants(args, names):
    """The variant names of `names` this run times (--variants; all by default)."""
    return [v for v in names if args.variants is None or v in args.variants]


def select_is_triton(select) -> bool:
    return getattr(select, "__module__", "").endswith("select_pages.triton")


def check_outputs(arms, st, ids, S):
    """Relative errors between arms that compute the same function (printed and stored; never timed).
    References: SDPA flash for the dense arms (when it ran), the PyTorch twin (fp32 math, bf16 output) for
    the sparse ones. Selection variants must select exactly what the default launch selects; the fp8
    arm's share of pages equal to the bf16 selection is recorded (random keys: near-equal page means, a
    lower bound for real ones)."""
    q = st["q"]
    ref_sparse = sparse_decode_attention_naive(q, st["k_pool"], st["v_pool"], ids, st["table"], st["lengths"]).float()
    rel = lambda a, r: ((a.reshape(r.shape).float() - r).norm() / r.norm()).item()  # noqa: E731
    errs = {"unique_attention_vs_naive": rel(arms["unique_attention"](), ref_sparse)}
    if "sdpa_flash" in arms:
        ref_dense = arms["sdpa_flash"]().reshape(q.shape).float()
        errs["triton_dense_paged_vs_sdpa"] = rel(arms["triton_dense_paged"](), ref_dense)
        if "flashinfer_dense" in arms:
            errs["flashinfer_dense_vs_sdpa"] = rel(arms["flashinfer_dense"](), ref_dense)
    if "flashinfer_sparse" in arms:
        errs["flashinfer_sparse_vs_naive"] = rel(arms["flashinfer_sparse"](), ref_sparse)
    for variant in SELECT_VARIANTS:
        for tag, want in (("unique", ids), ("unique_fp8", arms.get("unique_fp8_select", lambda: None)())):
            arm = f"{tag}_select_{variant}"
            if arm in arms and want is not None:
                errs[f"{arm}_differs"] = int((arms[arm]() != want).sum())
    for code in CODE_MAX:
        if f"unique_{code}_select" in arms:
            errs[f"{code}_selection_overlap"] = selection_overlap(arms[f"unique_{code}_select"](), ids)
        refined = arms.get(f"unique_{code}_select_{REFINE}")
        if refined is not None:
            errs[f"{code}_{REFINE}_selection_overlap"] = selection_overlap(refined(), ids)
    # scoring accuracy against the fp32 twin on the first two sequences: max |score - twin| / max |twin|
    n = min(2, q.shape[0])
    for tag, mean, scale in [("unique", st["mean"], None)] + [(f"unique_{c}", st[f"mean_{c}"], st[f"scale_{c}"])
                                                              for c in CODE_MAX]:
        twin = page_scores_naive(q[:n], st["table"][:n], st["lengths"][:n], mean, st["std"], page_size=S,
                                 scale=scale)
        for arm in [a for a in arms if a == f"{tag}_score" or a.startswith(f"{tag}_score_")]:
            got = arms[arm]()[:n]
            errs[f"{arm}_rel_err"] = ((got - twin).abs().max() / twin.abs().max()).item()
    for variant in ("dot", "fma"):  # selection agreement of a scoring variant with the default launch
        for tag, want in (("unique", ids), ("unique_fp8", arms.get("unique_fp8_select", lambda: None)())):
            if f"{tag}_select_{variant}" in arms and want is not None:
                errs[f"{tag}_select_{variant}_overlap"] = selection_overlap(arms[f"{tag}_select_{variant}"](), want)
    return errs


def selection_overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of b's selected pages (ids >= 0) that a selects too, per (sequence, KV head), averaged."""
    hit = (a[..., :, None] == b[..., None, :]).any(-2) & (b >= 0)
    return (hit.sum(-1).float() / (b >= 0).sum(-1).clamp(min=1)).mean().item()


def capture(fn):
    """Warm fn up on a side stream, then capture it in a CUDA graph (returned; time its replay)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    torch.cuda.synchronize()
    return g


def time_arms(arms, rounds, rep_ms):
    """Median over rounds of do_bench medians; arms alternate, in an order rotated every round."""
    graphs, errors = {}, {}
    for name, fn in arms.items():
        try:
            graphs[name] = capture(fn)
        except Exception as exc:  # e.g. a backend that refuses this shape: recorded, arm skipped
            errors[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            torch.cuda.synchronize()
    names = list(graphs)
    samples = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            samples[n].append(triton.testing.do_bench(graphs[n].replay, warmup=5, rep=rep_ms, return_mode="median"))
    return {n: statistics.median(v) for n, v in samples.items()}, samples, errors


def copy_bandwidth(n_bytes=4 << 30):
    """Device-to-device copy TB/s, counting bytes read + written."""
    a = torch.empty(n_bytes // 2, dtype=torch.bfloat16, device="cuda").normal_()
    b = torch.empty_like(a)
    ms = triton.testing.do_bench(lambda: b.copy_(a), warmup=20, rep=200, return_mode="median")
    return 2 * n_bytes / (ms * 1e-3) / 1e12


def arm_bytes(arm, B, N, Hkv, D, S, k, elt=2, refine=0):
    """Bytes an arm must move at least: K+V it reads, plus the page stats its selection reads (bytes per
    page from the score registry, fp8 means with their scale where the arm says fp8; a refine arm also the
    k + refine candidates' pool-dtype means)."""
    kv_dense = 2 * B * N * Hkv * D * elt
    kv_sparse = 2 * B * Hkv * k * S * D * elt
    if arm in DENSE_ARMS:
        return kv_dense
    if arm in ("unique_attention", "flashinfer_sparse"):
        return kv_sparse
    a = sparse_arm(arm)
    stats = B * Hkv * (N // S) * SCORES[a["score"]].bytes_per_page(D, elt, coded_means=a["code"] is not None)
    if a["only"]:
        return stats + B * Hkv * (N // S) * 4  # + the fp32 scores it writes
    if a["variant"] == REFINE:
        stats += B * Hkv * (k + refine) * D * elt
    return stats + (kv_sparse if a["step"] else 0)


def shape_records(med, samples, errors, errs, B, N, args, copy_tbps, selector):
    H, Hkv, D, S, T = args.heads, args.kv_heads, args.head_dim, args.page_size, args.budget
    k = T // S
    best_dense = min((med[a] for a in DENSE_ARMS if a in med), default=float("nan"))
    dense_bytes = arm_bytes("sdpa_flash", B, N, Hkv, D, S, k)
    recs = []
    for arm, ms in med.items():
        if arm in APPEND_ARMS:
            continue
        # floor: the arm's own minimum bytes (the step's: its stats + the chosen pages' K/V) at the copy
        # bandwidth; cap = dense bytes / the step's floor bytes (the UNIQUE bf16 step's for the others)
        nbytes = arm_bytes(arm, B, N, Hkv, D, S, k, refine=args.refine)
        a = sparse_arm(arm)
        step_bytes = arm_bytes(f"{a['score']}{'_' + a['code'] if a['code'] else ''}_step" if a else "unique_step",
                               B, N, Hkv, D, S, k)
        recs.append(dict(
            arm=arm, B=B, N=N, H=H, Hkv=Hkv, D=D, S=S, budget=T, median_ms=ms, round_medians_ms=samples[arm],
            speedup_vs_best_dense=best_dense / ms, achieved_tbps=nbytes / (ms * 1e-3) / 1e12, bytes=nbytes,
            floor_fraction=(nbytes / (copy_tbps * 1e12)) / (ms * 1e-3), speedup_cap=dense_bytes / step_bytes,
            copy_tbps=copy_tbps, selector=selector, errors=errs))
    recs += [dict(arm=a, B=B, N=N, skipped=e) for a, e in errors.items()]
    return recs + maintenance_records(med, samples, B, N)


def maintenance_records(med, samples, B, N) -> list[dict]:
    """[stats_maintenance record] of one shape, or [] when an append arm or every dense arm is missing.

    stats_overhead_ms = append_kv_stats - append_kv_plain (one layer's one-token append per sequence);
    stats_share_of_dense = stats_overhead_ms / the best dense arm's median (issue 3 target: < 5 % at 32K).
    """
    dense = {a: med[a] for a in DENSE_ARMS if a in med}
    if not dense or any(a not in med for a in APPEND_ARMS):
        return []
    best = min(dense, key=dense.get)
    overhead = med["append_kv_stats"] - med["append_kv_plain"]
    return [{"arm": "stats_maintenance", "B": B, "N": N, "best_dense_arm": best, "best_dense_ms": dense[best],
             "append_kv_stats_ms": med["append_kv_stats"], "append_kv_plain_ms": med["append_kv_plain"],
             "stats_overhead_ms": overhead, "stats_share_of_dense": overhead / dense[best],
             "round_medians_ms": {a: samples[a] for a in APPEND_ARMS}}]


def by_shape(records) -> dict:
    by = {}
    for r in records:
        if "median_ms" in r:
            by.setdefault((r["B"], r["N"]), {})[r["arm"]] = r
    return by


def print_table(records):
    arms = ["sdpa_cudnn", "flashinfer_dense", "triton_dense_paged", "unique_step", "unique_select",
            "unique_fp8_step", "unique_fp8_select", "unique_select_rowsel", "unique_select_filter", "quest_step"]
    print("\nmedian ms (speedup vs best dense; select arms: fraction of their byte floor)")
    print(f"{'B':>3} {'N':>6} " + " ".join(f"{a[:20]:>20}" for a in arms))
    for (B, N), row in sorted(by_shape(records).items()):
        cells = []
        for a in arms:
            r = row.get(a)
            x = r and (r["floor_fraction"] if "select" in a else r["speedup_vs_best_dense"])
            cells.append(f"{r['median_ms']:8.4f} ({x:5.2f}{'' if 'select' in a else 'x'})" if r else "-")
        print(f"{B:>3} {N:>6} " + " ".join(f"{c:>20}" for c in cells))


TARGETS = {(80, 32768): 11.5, (80, 131072): 13.5, (1, 131072): 6.0}       # issue 12, bf16 statistics
FP8_TARGETS = {(80, 32768): 16.0, (80, 131072): 22.0}                     # issue 12, fp8 statistics


def arms_like(records, kind: str) -> list[str]:
    """The UNIQUE '<kind>' arms (select / score / step) present in `records`: bf16 statistics before fp8,
    the default launch before its variants, variants in the order they ran (tables follow the run)."""
    names = list(dict.fromkeys(r["arm"] for r in records if "median_ms" in r))
    found = [n for n in names if (a := sparse_arm(n)) and a["score"] == "unique"
             and n.split("_")[1 + (a["code"] is not None)] == kind]
    return sorted(found, key=lambda n: (sparse_arm(n)["code"] or "", sparse_arm(n)["variant"] is not None))


def markdown_report(records) -> str:
    """BENCHMARKS.md tables from the JSON records: the sparse steps (bf16 and fp8 statistics) against the
    best dense arm, the selection variants, and the dense arms side by side."""
    by = by_shape(records)
    ms = lambda row, a: f"{row[a]['median_ms']:.4f}" if a in row else "-"                  # noqa: E731
    sp = lambda row, a: f"{row[a]['speedup_vs_best_dense']:.2f}x" if a in row else "-"      # noqa: E731
    fl = lambda row, a: f"{row[a]['floor_fraction']:.2f}" if a in row else "-"             # noqa: E731
    lines = ["| B | N | best dense, ms | UNIQUE step, ms | speedup | cap | target | score+top-k, ms "
             "| of its floor | attention, ms | score+top-k share | fp8 step, ms | fp8 speedup | fp8 cap "
             "| fp8 target | fp8 score+top-k, ms | of its floor | Quest step, ms |",
             "|---" * 18 + "|"]
    for (B, N), row in sorted(by.items()):
        dense = [a for a in DENSE_ARMS if a in row]
        if not dense or "unique_step" not in row:
            continue
        best = min(dense, key=lambda a: row[a]["median_ms"])
        u, s = row["unique_step"], row["unique_select"]
        f8 = row.get("unique_fp8_step")
        cap8 = f"{f8['speedup_cap']:.1f}x" if f8 else "-"
        lines.append(
            f"| {B} | {N // 1024}K | {row[best]['median_ms']:.4f} ({best}) | {u['median_ms']:.4f} | "
            f"{u['speedup_vs_best_dense']:.2f}x | {u['speedup_cap']:.1f}x | "
            f"{str(TARGETS[(B, N)]) + 'x' if (B, N) in TARGETS else ''} | {s['median_ms']:.4f} | "
            f"{s['floor_fraction']:.2f} | {ms(row, 'unique_attention')} | {s['median_ms'] / u['median_ms']:.0%} | "
            f"{ms(row, 'unique_fp8_step')} | {sp(row, 'unique_fp8_step')} | {cap8} | ")
        lines[-1] += (f"{str(FP8_TARGETS[(B, N)]) + 'x' if (B, N) in FP8_TARGETS else ''} | "
                      f"{ms(row, 'unique_fp8_select')} | {fl(row, 'unique_fp8_select')} | {ms(row, 'quest_step')} |")
    variants = arms_like(records, "select")
    lines += ["", "score + top-k, ms (fraction of its byte floor): default launch, whole-row select, split filter, "
              "and the scoring / launch variants of the run (see SELECT_VARIANTS)",
              "", "| B | N | " + " | ".join(variants) + " |", "|---" * (len(variants) + 2) + "|"]
    for (B, N), row in sorted(by.items()):
        lines.append(f"| {B} | {N // 1024}K | "
                     + " | ".join(f"{ms(row, a)} ({fl(row, a)})" if a in row else "-" for a in variants) + " |")
    scoring = arms_like(records, "score")
    lines += ["", "scoring pass alone (`score_pages`, no top-k), ms (fraction of its byte floor: statistics read "
              "+ fp32 scores written)", "", "| B | N | " + " | ".join(scoring) + " |",
              "|---" * (len(scoring) + 2) + "|"]
    for (B, N), row in sorted(by.items()):
        lines.append(f"| {B} | {N // 1024}K | "
                     + " | ".join(f"{ms(row, a)} ({fl(row, a)})" if a in row else "-" for a in scoring) + " |")
    steps = arms_like(records, "step")
    lines += ["", "step, ms (speedup vs the best dense arm): default launch and each step variant", "",
              "| B | N | " + " | ".join(steps) + " |", "|---" * (len(steps) + 2) + "|"]
    for (B, N), row in sorted(by.items()):
        lines.append(f"| {B} | {N // 1024}K | " + " | ".join(f"{ms(row, a)} ({sp(row, a)})" if a in row else "-"
                                                             for a in steps) + " |")
    lines += ["", "| B | N | " + " | ".join(DENSE_ARMS) + " | ours, TB/s | score+top-k, TB/s | attention, TB/s |",
              "|---" * (len(DENSE_ARMS) + 5) + "|"]
    for (B, N), row in sorted(by.items()):
        tb = [f"{row[a]['achieved_tbps']:.2f}" if a in row else "-"
              for a in ("triton_dense_paged", "unique_select", "unique_attention")]
        lines.append(f"| {B} | {N // 1024}K | " + " | ".join(ms(row, a) for a in DENSE_ARMS) + " | "
                     + " | ".join(tb) + " |")
    skipped = [r for r in records if "skipped" in r]
    if skipped:
        lines += [""] + [f"- skipped: B={r['B']} N={r['N'] // 1024}K {r['arm']}: {r['skipped']}" for r in skipped]
    return "\n".join(lines + maintenance_table(records))


def maintenance_table(records) -> list[str]:
    """Markdown lines (preceded by a blank one) of the stats_maintenance records; [] when there are none."""
    rows = sorted((r for r in records if r.get("arm") == "stats_maintenance"), key=lambda r: (r["B"], r["N"]))
    if not rows:
        return []
    header = ("| B | N | best dense, ms | append with stats, ms | plain append, ms | stats overhead, ms "
              "| share of dense |")
    lines = ["", header, "|---" * 7 + "|"]
    for r in rows:
        lines.append(f"| {r['B']} | {r['N'] // 1024}K | {r['best_dense_ms']:.4f} ({r['best_dense_arm']}) | "
                     f"{r['append_kv_stats_ms']:.4f} | {r['append_kv_plain_ms']:.4f} | "
                     f"{r['stats_overhead_ms']:.4f} | {r['stats_share_of_dense']:.1%} |")
    return lines


def memory_limit_gb(max_gb: float | None) -> float:
    """GB a shape's tensors may take: --max-gb, capped at 95 % of the card (an 80 GB H100 is not an H200)."""
    card = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / 1e9 * 0.95
    return card if max_gb is None else min(max_gb, card)


def shape_gb(B, N, Hkv, D, contiguous: bool) -> float:
    """GB of one shape's state: paged K/V (+ the contiguous copy SDPA reads), stats and 10 % slack."""
    kv = 2 * B * N * Hkv * D * 2
    return kv * (2 if contiguous else 1) * 1.1 / 1e9


def run_shape(B, N, args, select, fi, configs, copy_tbps, selector, limit_gb) -> list[dict]:
    """Records of one (B, N): every arm timed; without the contiguous copy (no SDPA arms) where only the
    paged state fits; one `skipped` record where nothing fits or the shape fails (out of memory, say),
    so the sweep goes on."""
    full, paged = (shape_gb(B, N, args.kv_heads, args.head_dim, c) for c in (True, False))
    if paged > limit_gb:
        msg = f"needs ~{paged:.0f} GB of {limit_gb:.0f} GB usable"
        print(f"skip B={B} N={N}: {msg}", flush=True)
        return [dict(arm="skipped", B=B, N=N, need_gb=paged, limit_gb=limit_gb, skipped=msg)]
    contiguous = full <= limit_gb
    note = [] if contiguous else [dict(arm=a, B=B, N=N, skipped=f"the contiguous copy needs ~{full:.0f} GB of "
                                                                  f"{limit_gb:.0f} GB usable") for a in
                                  ("sdpa_flash", "sdpa_cudnn")]
    t0 = time.time()
    try:
        st = build_state(B, N, args.heads, args.kv_heads, args.head_dim, args.page_size, torch.bfloat16,
                         contiguous=contiguous)
        arms, ids = make_arms(st, args, select, fi, configs)
        errs = check_outputs(arms, st, ids, args.page_size)
        med, samples, errors = time_arms(arms, args.rounds, args.rep_ms)
    except Exception as exc:  # noqa: BLE001  (recorded; the remaining shapes still run)
        msg = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        print(f"skip B={B} N={N}: {msg}", flush=True)
        return [dict(arm="skipped", B=B, N=N, skipped=msg)]
    print(f"B={B} N={N} ({time.time() - t0:.1f} s) errors {errs} skipped {errors}\n  "
          + ", ".join(f"{a} {m:.4f}" for a, m in med.items()), flush=True)
    return note + shape_records(med, samples, errors, errs, B, N, args, copy_tbps, selector)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="JSON file for the full records")
    p.add_argument("--report", help="print BENCHMARKS.md tables from this JSON file and exit (no GPU needed)")
    p.add_argument("--tokens", type=int, nargs="+", default=[8192, 16384, 32768, 65536, 131072])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16, 80])
    add_decode_shape(p)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--rep-ms", type=float, default=30.0)
    p.add_argument("--select-config", nargs="+", default=[], metavar="FIELD=V",
                   help="SelectConfig of every selection arm (one value per field; grids: sweep_launch.py)")
    p.add_argument("--attn-config", nargs="+", default=[], metavar="FIELD=V",
                   help="DecodeConfig of our sparse attention arms (over its defaults)")
    p.add_argument("--dense-config", nargs="+", default=[], metavar="FIELD=V",
                   help="DecodeConfig of our dense paged attention arm (over its own defaults)")
    p.add_argument("--max-gb", type=float, default=None,
                   help="skip shapes whose tensors exceed this (default: 95 %% of the card's memory)")
    p.add_argument("--scores", nargs="+", default=["unique", "quest"], choices=scores_for("select"),
                   help="page scores timed (select and step arms; one-byte-mean arms for scores that read the mean)")
    p.add_argument("--codes", nargs="*", default=["fp8"], choices=sorted(CODE_MAX),
                   help="one-byte key-mean formats timed beside the pool dtype (stats_dtype; int8 arms: select, "
                        "step, score and the selection overlap with bf16; launch variants run for fp8 only)")
    p.add_argument("--refine", type=int, default=4,
                   help="re-ranking arms per one-byte code: k + REFINE candidates, k kept by the bf16 means "
                        "(SparsityConfig.refine; 0: none)")
    p.add_argument("--variants", nargs="*", default=None, choices=sorted(SELECT_VARIANTS),
                   help="launch variants timed beside the defaults (select / step / score arms; "
                        "default: all)")
    args = p.parse_args(argv)
    from unique_asr.kernels.sparse_decode.triton import DENSE_CONFIG, SPARSE_CONFIG

    given = (("select", "--select-config", args.select_config, SelectConfig()),
             ("sparse", "--attn-config", args.attn_config, SPARSE_CONFIG),
             ("dense", "--dense-config", args.dense_config, DENSE_CONFIG))
    args.configs = {kind: one_config(words, base, flag) for kind, flag, words, base in given if words}
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.report:
        with open(args.report) as f:
            print(markdown_report(json.load(f)))
        return 0
    if not args.out:
        raise SystemExit("--out is required for a benchmark run")
    torch.manual_seed(0)
    select, selector = load_selector()
    fi, fi_error = load_flashinfer()
    print(f"device {torch.cuda.get_device_name()}, selector {selector}, flashinfer "
          f"{fi.__version__ if fi else 'unavailable: ' + fi_error}", flush=True)
    copy_tbps = copy_bandwidth()
    print(f"copy bandwidth {copy_tbps:.3f} TB/s (read + write)", flush=True)
    records = [dict(arm="copy", copy_tbps=copy_tbps, flashinfer_error=fi_error, selector=selector,
                    code=code_version(), torch=torch.__version__, triton=triton.__version__,
                    configs={k: as_dict(v) for k, v in args.configs.items()})]
    limit_gb = memory_limit_gb(args.max_gb)
    for B in args.batch:
        for N in args.tokens:
            records += run_shape(B, N, args, select, fi, args.configs, copy_tbps, selector, limit_gb)
            torch.cuda.empty_cache()
            with open(args.out, "w") as f:  # after every shape, so a run cut short keeps what it measured
                json.dump(records, f, indent=1)
    print_table(records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
