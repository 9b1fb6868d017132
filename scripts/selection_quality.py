"""Selection quality of UNIQUE and its baselines on real Whisper cross-attention (issue 3, item 6).

For a few clips of each data set (evenly spaced through the manifest, <= 30 s), the model decodes the window
greedily (dense attention, timestamps on, language "en"); the chosen tokens are then fed again in one
teacher-forced pass through `WhisperModel.decode` with a script-side cross memory that hands the decoder's
cross-attention queries back (an explicit argument, no hooks). Every query that predicts a token (the last
prompt position and each sampled token, so eot too) is scored per layer and head against that window's
cross K/V [1500, H, D]: pages of S frames, stats and scores from the kernels' PyTorch twins, top-k = T / S
pages, then oracle-page recall, captured attention mass and attention-output relative error, the latter both for
unselected="drop" (the published method) and unselected="estimate" (`unique_asr.attention.quality`).
One JSON record per (method, S, T).

    python scripts/selection_quality.py --data ../shared/data --out evaluation/selection_quality.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from unique_asr.kernels.page_stats.naive import quantise_mean
from unique_asr.kernels.select_pages import page_scores_naive, refine_pages_naive, topk_pages_naive
from unique_asr.kernels.select_pages.registry import CODE_MAX, SCORES

from unique_asr.attention.quality import estimate_error, page_attention, paged_window, selection_metrics
from unique_asr.audio import load, log_mel
from unique_asr.config import DecodeOptions, SparsityConfig
from unique_asr.decoding import decode_batch, initial_tokens
from unique_asr.models import load_whisper
from unique_asr.models.cross_memory import CrossMemory
from unique_asr.models.whisper import SelfAttentionCache

FRAME_SAMPLES = 320  # 16 kHz audio per encoder frame (hop 160, the encoder's stride 2): 1500 frames = 30 s
# every statistics-based score of the registry (the oracle is the reference every method is measured against)
METHODS = {name: (name, 0.5 if s.uses_lam else 0.0) for name, s in SCORES.items() if not s.needs_keys}


@dataclass(frozen=True)
class RecordingMemory:
    """Dense cross memory that also keeps each layer's queries: queries[layer] = q [B, T, H, D]."""

    memory: CrossMemory
    queries: dict

    @property
    def batch(self) -> int:
        return self.memory.batch

    def attend(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        self.queries[layer] = q.detach().clone()
        return self.memory.attend(layer, q)


def pick_clips(data: Path, spec: str) -> list[tuple[str, Path]]:
    """[(data set, audio path)] for 'name:count,...': `count` clips <= 30 s evenly spaced in the manifest."""
    clips = []
    for item in spec.split(","):
        name, count = item.split(":")
        with open(data / name / "manifest.jsonl") as f:
            rows = [json.loads(line) for line in f]
        rows = [r for r in rows if r["duration"] <= 30.0]
        for i in np.linspace(0, len(rows) - 1, int(count)).round().astype(int):
            clips.append((name, data / name / rows[i]["path"]))
    return clips


@torch.inference_mode()
def capture(model, tokenizer, audio: np.ndarray):
    """Greedy-decode one window, then rerun it teacher-forced. Returns (q [L, N, H, D], k, v [L, F, H, D],
    n sampled tokens); N = sampled tokens + 1 queries, each predicting the next token."""
    options = DecodeOptions(language="en")
    features = model.encode(log_mel(torch.from_numpy(audio), model.config.n_mels))
    result = decode_batch(model, tokenizer, features, options, temperature=0.0)[0]
    prompt = initial_tokens(tokenizer, "en", options, (), 0)
    tokens = torch.tensor([prompt + list(result.tokens)])
    recorder = RecordingMemory(model.cross_memory(features), {})
    cache = SelfAttentionCache.allocate(model.config, 1, tokens.shape[1])
    model.decode(tokens, cache, recorder)
    layers = range(model.config.n_text_layer)
    q = torch.stack([recorder.queries[i][0, len(prompt) - 1:] for i in layers])
    return q, recorder.memory.k[:, 0], recorder.memory.v[:, 0], len(result.tokens)


KEEP_METHODS = ("unique", "quest")  # also measured with keep_first + keep_last ("<method>+keep")
REFINE = 4  # "unique_<code>r": the one-byte codes' selection re-ranked (SparsityConfig.refine 4)


def score_layer(q, k, v, page_sizes, budgets, sink: dict, tag: tuple[str, int], audio_frames: int | None = None
                ) -> None:
    """Metrics of every method, S and T for one layer's queries q [N, H, D] over k, v [F, H, D];
    per-(query, head) values (fp32 [N, H]) are appended to sink[(method, S, T)] as (tag, metrics), with tag =
    (data set, layer). audio_frames: encoder frames that hold the clip's audio (the rest of the window is
    padding); when given, "audio_mass" is the true attention mass on the pages that hold audio."""
    N = q.shape[0]
    for S in page_sizes:
        k_pool, v_pool, stats, table, lengths = paged_window(k, v, S)
        table, lengths = table.expand(N, -1), lengths.expand(N)
        mass, partial = page_attention(q, k_pool, v_pool, k.shape[0])
        scores = {"oracle": mass}
        for name, (mode, lam) in METHODS.items():
            scores[name] = page_scores_naive(q, table, lengths, stats.mean, stats.std, page_size=S, mode=mode,
                                             lam=lam, sigma=stats.sigma, kmin=stats.kmin, kmax=stats.kmax)
        for code in CODE_MAX:  # the cache's one-byte means (stats_dtype fp8 / int8) + their per-page scale
            codes, scale = quantise_mean(stats.mean, code)
            scores[f"unique_{code}"] = page_scores_naive(q, table, lengths, codes, stats.std, page_size=S,
                                                         mode="unique", lam=METHODS["unique"][1], scale=scale)
        for T in budgets:
            pick = {m: topk_pages_naive(s, table, lengths, k=T // S, page_size=S) for m, s in scores.items()}
            for code in CODE_MAX:  # SparsityConfig.refine: k + REFINE pages from the codes, k by the full means
                cand = topk_pages_naive(scores[f"unique_{code}"], table, lengths, k=T // S + REFINE, page_size=S)
                pick[f"unique_{code}r"] = refine_pages_naive(q, cand, table, lengths, stats.mean, stats.std,
                                                             k=T // S, page_size=S, lam=METHODS["unique"][1])
            for m in KEEP_METHODS:  # the first and last page always selected (SparsityConfig.keep_first / last)
                pick[m + "+keep"] = topk_pages_naive(scores[m], table, lengths, k=T // S, page_size=S,
                                                     keep_first=True, keep_last=True)
            for m, ids in pick.items():
                metrics = selection_metrics(ids, pick["oracle"], mass, partial)
                metrics["rel_error_estimate"] = estimate_error(q, k_pool, v_pool, stats, ids, k.shape[0], partial)
                if audio_frames is not None:
                    metrics["audio_mass"] = mass[..., :-(-audio_frames // S)].sum(-1)
                if m.startswith("unique_"):  # one-byte means: share of the UNIQUE selection's pages kept
                    metrics["agreement"] = selection_metrics(ids, pick["unique"], mass, partial)["recall"]
                sink.setdefault((m, S, T), []).append((tag, metrics))


def mean_by(items: list, part: int, key: str) -> dict:
    """Mean of metric `key` per value of tag[part] (0: data set, 1: layer) over sink items [(tag, metrics)]."""
    groups = sorted({tag[part] for tag, _ in items})
    return {str(g): torch.cat([m[key].flatten() for tag, m in items if tag[part] == g]).mean().item()
            for g in groups}


def captured_by(items: list, part: int) -> dict:
    """Mean captured mass per value of tag[part] (0: data set, 1: layer) over sink items [(tag, metrics)]."""
    return mean_by(items, part, "captured")


def summarise(sink: dict) -> list[dict]:
    """One record per (method, S, T): counts, means and tail quantiles over all (step, layer, head), and the
    mean captured mass per decoder layer and per data set."""
    records = []
    for (method, S, T), items in sorted(sink.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        recall, mass, err, est = (torch.cat([m[key].flatten() for _, m in items])
                                  for key in ("recall", "captured", "rel_error", "rel_error_estimate"))
        records.append({"method": method, "page_size": S, "budget": T, "pages": T // S, "n": int(recall.numel()),
                        "recall_mean": recall.mean().item(), "captured_mean": mass.mean().item(),
                        "captured_p10": mass.quantile(0.1).item(), "rel_error_mean": err.mean().item(),
                        "rel_error_median": err.median().item(), "rel_error_p90": err.quantile(0.9).item(),
                        "rel_error_estimate_mean": est.mean().item(),
                        "rel_error_estimate_median": est.median().item(),
                        "rel_error_estimate_p90": est.quantile(0.9).item(),
                        "rel_error_mean_by_layer": mean_by(items, 1, "rel_error"),
                        "rel_error_estimate_mean_by_layer": mean_by(items, 1, "rel_error_estimate"),
                        **({"audio_mass_mean_by_layer": mean_by(items, 1, "audio_mass")}
                           if "audio_mass" in items[0][1] else {}),
                        "captured_mean_by_layer": captured_by(items, 1),
                        **({"agreement_with_unique_mean": torch.cat([m["agreement"].flatten() for _, m in items])
                            .mean().item()} if "agreement" in items[0][1] else {}),
                        "captured_mean_by_dataset": captured_by(items, 0)})
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="base")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--clips", default="librispeech-test-other-dev:8,ljspeech-lj001:4")
    parser.add_argument("--page-sizes", default="8,16,32")
    parser.add_argument("--budgets", default="32,64,128,256,384,512,768")
    parser.add_argument("--out", type=Path, default=Path("evaluation/selection_quality.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    page_sizes = [int(s) for s in args.page_sizes.split(",")]
    budgets = [int(t) for t in args.budgets.split(",")]
    start = time.perf_counter()
    model, tokenizer, _ = load_whisper(args.model)
    model = model.with_sparsity(SparsityConfig())
    sink, clips = {}, []
    for dataset, path in pick_clips(args.data, args.clips):
        audio = load(str(path))
        q, k, v, n_tokens = capture(model, tokenizer, audio)
        audio_frames = -(-len(audio) // FRAME_SAMPLES)
        for layer in range(q.shape[0]):
            score_layer(q[layer], k[layer], v[layer], page_sizes, budgets, sink, (dataset, layer), audio_frames)
        clips.append({"dataset": dataset, "file": path.name, "tokens": n_tokens, "queries": int(q.shape[1])})
        print(f"{dataset}/{path.name}: {q.shape[1]} queries x {q.shape[0]} layers x {q.shape[2]} heads", flush=True)
    report = {"model": args.model, "dtype": "float32", "frames": int(k.shape[1]), "heads": int(k.shape[2]),
              "head_dim": int(k.shape[3]),
              "methods": {m: {"mode": mo, "lam": lam} for m, (mo, lam) in METHODS.items()},
              "decode": "greedy, dense, timestamps on, language en; queries recomputed teacher-forced",
              "command": "python scripts/selection_quality.py " + " ".join(sys.argv[1:]),
              "clips": clips, "records": summarise(sink), "seconds": round(time.perf_counter() - start, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out} ({len(report['records'])} records, {report['seconds']} s)")


if __name__ == "__main__":
    main()
