"""The one table of page scores: every other place (config validation, the cache's statistics, kernel
dispatch, tests, benchmark arms) derives what it needs from `SCORES`.

Adding a score is one `Score` entry here plus its reference function in `naive.py` (named by
`Score.reference`) and, when it runs in the Triton kernel, its branch under `Score.triton_id`.

Imports nothing heavy (no torch, no triton): `unique_asr.config` validates modes against this table while
`import unique_asr` stays light. `Score.reference_fn` imports the PyTorch twin on first use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Statistic:
    """A per-(page, KV head) statistic the cache can keep. per_dim: [P, Hkv, D] (else [P, Hkv]);
    dtype: "pool" (the K/V pool's dtype, or the stats dtype for the key mean) or "fp32"."""

    name: str
    per_dim: bool
    dtype: str

    def nbytes(self, head_dim: int, pool_bytes: int) -> int:
        width = head_dim if self.per_dim else 1
        return width * (pool_bytes if self.dtype == "pool" else 4)


STATISTICS = {s.name: s for s in (
    Statistic("mean", True, "pool"),    # key mean mu
    Statistic("std", False, "fp32"),    # sqrt(mean_j ||k_j - mu||^2)
    Statistic("sigma", True, "pool"),   # per-dim population std
    Statistic("kmin", True, "pool"),    # per-dim min / max of the page's keys
    Statistic("kmax", True, "pool"),
    Statistic("scale", False, "fp32"),  # per-page dequantisation scale of coded (fp8 / int8) means: mu = mean * scale
    Statistic("vmean", True, "pool"),   # value mean (no score reads it: SparsityConfig.unselected="estimate")
    Statistic("rmean", True, "pool"),   # key mean in the pool dtype kept beside coded means, read only for the
                                        # few candidates they pass on (SparsityConfig.refine, `refine_pages`)
)}
# Coded key means: one byte a dimension, mu = code * scale with one fp32 scale per (page, KV head), scale =
# max_d |mu_d| / CODE_MAX (136 instead of 260 B per page and head at D = 128). "fp8": e4m3 codes (448 is the
# largest finite e4m3 value; 3 mantissa bits, so a step of about |mu_d| / 16 at the largest dimensions);
# "int8": symmetric integers (a uniform step of max|mu| / 127: on real queries it selects 97.8-99.8 % of the
# fp32 selection's pages where e4m3 selects 93.3-99.3 %, docs/selection_quality.md). Codes' torch dtypes:
# kernels/_checks.CODE_DTYPES (this module imports no torch).
CODE_MAX = {"fp8": 448.0, "int8": 127.0}
# Storage of the key means: the pool's dtype, or one of the codes (SparsityConfig.stats_dtype,
# PagedKVCache(stats_dtype=...)).
STATS_DTYPES = ("pool", *CODE_MAX)
BASE_STATISTICS = ("mean", "std")  # kept for every cache (the selection call takes them positionally)

# Kernels a score can run in: "select" = kernels/select_pages Triton kernel (decode), "softmask" =
# kernels/softmask_attention (the soft-gated training forward).
KERNELS = ("select", "softmask")


@dataclass(frozen=True)
class Score:
    """name: the mode string (SparsityConfig.mode, select_pages(mode=...));
    triton_id: the MODE constexpr of the select kernel (None: reference only, e.g. the oracle);
    stats: statistics the score reads (bytes per page follow from them);
    reference: name of the PyTorch twin in kernels/select_pages/naive.py, called as
        fn(qg [B, Hkv, G, D] fp32, gather, qnorm [B, Hkv, G], lam) -> [B, Hkv, G, M] scores, where
        gather(stat) -> fp32 [B, M, Hkv, D] (per-dim) or [B, M, Hkv] of the sequence's pages;
    kernels: which kernels implement it (see KERNELS); uses_lam: the spread weight lam enters the score;
    needs_keys: scored from the key pool itself (oracle), not from statistics."""

    name: str
    triton_id: int | None
    stats: tuple[str, ...]
    reference: str
    kernels: tuple[str, ...] = ("select",)
    uses_lam: bool = False
    needs_keys: bool = False

    @property
    def reference_fn(self):
        return getattr(importlib.import_module(f"{__package__}.naive"), self.reference)

    def bytes_per_page(self, head_dim: int, pool_bytes: int = 2, coded_means: bool = False) -> int:
        """Statistic bytes this score reads per (page, KV head); coded_means: means of 1 byte a dim (fp8 or
        int8 codes) plus their fp32 scale."""
        total = sum(STATISTICS[s].nbytes(head_dim, pool_bytes) for s in self.stats)
        if coded_means and "mean" in self.stats:
            total += STATISTICS["mean"].nbytes(head_dim, 1) - STATISTICS["mean"].nbytes(head_dim, pool_bytes)
            total += STATISTICS["scale"].nbytes(head_dim, pool_bytes)
        return total

    @property
    def wide_stats(self) -> int:
        """Number of [D]-wide statistics a scoring tile holds at once (the kernel halves its tile above 1)."""
        return sum(STATISTICS[s].per_dim for s in self.stats)


SCORES = {s.name: s for s in (
    Score("unique", 0, ("mean", "std"), "score_unique", kernels=("select", "softmask"), uses_lam=True),
    Score("mean", 1, ("mean",), "score_mean"),
    Score("perdim", 2, ("mean", "sigma"), "score_perdim", uses_lam=True),
    Score("quest", 3, ("kmin", "kmax"), "score_quest"),
    Score("oracle", None, (), "oracle_scores_naive", kernels=(), needs_keys=True),
)}

# Scores whose selection from coded means can be re-ranked by the pool-dtype means (SparsityConfig.refine,
# select_pages.refine_pages): the select kernel's scores that read the key mean.
REFINABLE = tuple(name for name, s in SCORES.items() if "select" in s.kernels and "mean" in s.stats)


def get_score(name: str) -> Score:
    """The registry entry of `name`; ValueError naming the known scores otherwise."""
    if name not in SCORES:
        raise ValueError(f"page score {name!r} is not one of {', '.join(SCORES)}")
    return SCORES[name]


def scores_for(kernel: str) -> tuple[str, ...]:
    """Names of the scores `kernel` ("select" or "softmask") implements, in table order."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel {kernel!r} is not one of {', '.join(KERNELS)}")
    return tuple(name for name, s in SCORES.items() if kernel in s.kernels)


def require(name: str, kernel: str) -> Score:
    """The entry of `name`, checked to run in `kernel`; a one-line ValueError otherwise."""
    score = get_score(name)
    if kernel not in score.kernels:
        raise ValueError(f"the {kernel} kernel implements page scores {', '.join(scores_for(kernel))}, "
                         f"not {name!r}")
    return score


def statistics_for(modes, coded_means: bool = False) -> tuple[str, ...]:
    """Statistics a cache must keep to serve `modes` (unknown names and "dense" are ignored: the caller
    validated them), in table order; with coded_means (fp8 / int8) the means' scale too."""
    needed = set(BASE_STATISTICS) | ({"scale"} if coded_means else set())
    for m in modes:
        if m in SCORES:
            needed.update(SCORES[m].stats)
    return tuple(s for s in STATISTICS if s in needed)
