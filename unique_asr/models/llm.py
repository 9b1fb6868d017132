"""Llama/Qwen-style decoder (RMSNorm, rotary, GQA, SwiGLU) on the paged KV cache and the attention entry point.

Module names follow transformers' `LlamaForCausalLM` / `Qwen2ForCausalLM` without the `model.` prefix
(`embed_tokens`, `layers.i.self_attn.{q,k,v,o}_proj`, `layers.i.mlp.{gate,up,down}_proj`,
`layers.i.{input,post_attention}_layernorm`, `norm`, `lm_head`), so their weights load by prefix.

State is explicit: a `PagedKVCache` (keys stored after rotary, page statistics kept on append) and the
absolute rotary position of each row's next token (int64 [B]). Positions are separate from cache lengths
because a streaming caller may evict old pages while positions keep counting.
Both steps are inference only (no autograd: the cache is written in place).
- `prefill`: many tokens per row, causal, dense (`dense_attention` over the row's cached keys + the new ones).
- `decode_step`: one token per row, static shapes (preallocated pool, fixed top-k), attention through
  `unique_asr.attention.paged_decode_attention` with the layer's `SparsityConfig` (`dense_layers` stay dense).
  Outside attention it runs near its weight-read floor (issue 11 item 7): one QKV GEMM and one gate+up GEMM per
  layer (each layer's q/k/v and gate/up weights concatenated once, the modules' weights becoming views of the
  concatenation: `fuse`), rotary applied in place to the QKV output with the angles computed in the kernel,
  the residual add fused into the next RMSNorm (the last one into the final norm), silu(gate) * up in one pass,
  no dtype copies (unique_asr.kernels.fused_step: Triton on CUDA, their PyTorch twins elsewhere). Opt-in
  (`step_gemms = None`): at <= 16 rows the projections run the skinny Triton GEMM where it measures faster than
  cuBLAS on the card, split-K partials summed by the norm / rotary pass, the down projection forming
  silu(gate) * up on load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unique_asr.attention import dense_attention, paged_decode_attention
from unique_asr.cache import AppendPlan, PagedKVCache
from unique_asr.cache.paged_kv import upload
from unique_asr.config import SparsityConfig
from unique_asr.errors import ModelError
from unique_asr.kernels.fused_step import BLOCK_M, FUSED_BACKENDS


@dataclass(frozen=True)
class LLMConfig:
    """Shape of a Llama/Qwen-style decoder. qkv_bias: Qwen2 (q/k/v biases); o_bias: Llama attention_bias;
    max_positions: the trained context (transformers' max_position_embeddings; None: unknown)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    max_positions: int | None = None

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"rotary needs an even head_dim, got {self.head_dim}")

    @classmethod
    def from_hf(cls, hf) -> "LLMConfig":
        """From a transformers `LlamaConfig` / `Qwen2Config` (default rotary only; SiLU MLP only)."""
        if hf.model_type not in ("llama", "qwen2"):
            raise ModelError(f"decoder type {hf.model_type!r} is not supported (llama, qwen2)")
        rope = dict(getattr(hf, "rope_parameters", None) or {})
        if rope.get("rope_type", "default") != "default":
            raise ModelError(f"rotary type {rope['rope_type']!r} is not supported (only 'default')")
        if getattr(hf, "hidden_act", "silu") != "silu":
            raise ModelError(f"MLP activation {hf.hidden_act!r} is not supported (only SwiGLU with 'silu')")
        if getattr(hf, "use_sliding_window", False):
            raise ModelError("sliding-window attention is not supported")
        qwen = hf.model_type == "qwen2"
        bias = bool(getattr(hf, "attention_bias", False))
        return cls(
            vocab_size=hf.vocab_size, hidden_size=hf.hidden_size, intermediate_size=hf.intermediate_size,
            num_layers=hf.num_hidden_layers, num_heads=hf.num_attention_heads,
            num_kv_heads=hf.num_key_value_heads or hf.num_attention_heads,
            head_dim=getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads,
            rms_norm_eps=hf.rms_norm_eps, rope_theta=float(rope.get("rope_theta", 10000.0)),
            qkv_bias=qwen or bias, o_bias=bias and not qwen, mlp_bias=bool(getattr(hf, "mlp_bias", False)),
            tie_word_embeddings=bool(hf.tie_word_embeddings),
            max_positions=getattr(hf, "max_position_embeddings", None),
        )

    def to_dict(self) -> dict:
        return asdict(self)


class Attention(nn.Module):
    def __init__(self, c: LLMConfig):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = c.num_heads, c.num_kv_heads, c.head_dim
        self.q_proj = nn.Linear(c.hidden_size, c.num_heads * c.head_dim, bias=c.qkv_bias)
        self.k_proj = nn.Linear(c.hidden_size, c.num_kv_heads * c.head_dim, bias=c.qkv_bias)
        self.v_proj = nn.Linear(c.hidden_size, c.num_kv_heads * c.head_dim, bias=c.qkv_bias)
        self.o_proj = nn.Linear(c.num_heads * c.head_dim, c.hidden_size, bias=c.o_bias)

    def qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """x [..., d] -> q [..., H, D], k, v [..., Hkv, D]; q and k rotated by cos, sin [..., D]."""
        q = self.q_proj(x).unflatten(-1, (self.heads, self.head_dim))
        k = self.k_proj(x).unflatten(-1, (self.kv_heads, self.head_dim))
        v = self.v_proj(x).unflatten(-1, (self.kv_heads, self.head_dim))
        return rotate(q, cos, sin), rotate(k, cos, sin), v


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, c: LLMConfig):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=c.mlp_bias)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=c.mlp_bias)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=c.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c: LLMConfig):
        super().__init__()
        self.input_layernorm = nn.RMSNorm(c.hidden_size, eps=c.rms_norm_eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = nn.RMSNorm(c.hidden_size, eps=c.rms_norm_eps)
        self.mlp = MLP(c)


def fused_linear(module: nn.Module, names: tuple[str, ...], attr: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight, bias) of module's Linear children `names` concatenated by output rows, the children's parameters
    re-pointed to views of them (no second copy). Built once and kept as `attr`; built again when a child's
    parameter no longer views it (replaced by `.to()` or assignment)."""
    linears = [getattr(module, n) for n in names]
    cached = getattr(module, attr, None)
    if cached is not None:
        weight, offset = cached[0], 0
        for linear in linears:
            w = linear.weight
            if w.data_ptr() != weight.data_ptr() + offset * w.element_size() or w.dtype != weight.dtype:
                break
            offset += w.numel()
        else:
            return cached
    with torch.no_grad():
        weight = torch.cat([linear.weight.data for linear in linears])
        has_bias = linears[0].bias is not None
        bias = torch.cat([linear.bias.data for linear in linears]) if has_bias else None
        start = 0
        for linear in linears:
            rows = linear.weight.shape[0]
            linear.weight.data = weight[start:start + rows]
            if has_bias:
                linear.bias.data = bias[start:start + rows]
            start += rows
    object.__setattr__(module, attr, (weight, bias))  # not a parameter or buffer: the state dict stays per module
    return weight, bias


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding (half-split convention) of x [..., heads, D] with cos, sin [..., D]."""
    cos, sin = cos.unsqueeze(-2).to(x.dtype), sin.unsqueeze(-2).to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def allocate_cache(config: LLMConfig, sparsity: SparsityConfig, *, batch: int, num_pages: int,
                   max_pages_per_seq: int | None = None, dtype: torch.dtype = torch.float32,
                   device: str | torch.device = "cpu", backend: str = "auto") -> PagedKVCache:
    """A paged KV cache for this decoder: pages of `sparsity.page_size` tokens, the stats its mode needs."""
    return PagedKVCache(num_layers=config.num_layers, num_pages=num_pages, page_size=sparsity.page_size,
                        num_kv_heads=config.num_kv_heads, head_dim=config.head_dim, max_batch=batch,
                        max_pages_per_seq=max_pages_per_seq, dtype=dtype, device=device,
                        modes=("dense" if sparsity.mode == "window" else sparsity.mode,),  # window reads no stats
                        backend=backend, stats_dtype=sparsity.stats_dtype,
                        extra_statistics=sparsity.extra_statistics)


class LLM(nn.Module):
    """Decoder-only LM: embeddings -> layers -> norm -> lm_head, run on a `PagedKVCache`."""

    def __init__(self, config: LLMConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_layers))
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.fused_step = True  # False: the unfused reference step (`_decode_unfused`)
        self.fused_backend: str | None = None  # fused pieces: None = triton on CUDA, torch elsewhere
        # decode-step GEMMs: {} = cuBLAS; None = the skinny Triton GEMMs where they measure faster at the first
        # CUDA step (opt-in until measured on a card: their device benefit is not yet measured, and the first
        # step pays their Triton compilation); a dict = that plan (`step_gemms.plan_step_gemms`)
        self.step_gemms: dict | None = {}
        self.step_gemm_timings: dict = {}
        d = config.head_dim
        inv_freq = 1.0 / config.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def rotary(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions int64 [...] -> cos, sin fp32 [..., D]."""
        freqs = positions[..., None].float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm + lm_head: hidden [..., d] -> fp32 logits [..., V]."""
        return self.lm_head(self.norm(hidden)).float()

    @torch.no_grad()
    def prefill(self, x: torch.Tensor, cache: PagedKVCache, positions: torch.Tensor) -> torch.Tensor:
        """Append x [B, T, d] (embeddings; T tokens for every row) to the cache, causal over all it holds.

        positions: int64 [B], rotary position of each row's first new token. Returns hidden [B, T, d]
        (pre-norm); the caller advances its positions by T.
        """
        return self.prefill_rows(x, cache, range(x.shape[0]), positions)

    @torch.no_grad()
    def prefill_rows(self, x: torch.Tensor, cache: PagedKVCache, rows, positions) -> torch.Tensor:
        """`prefill` of some rows of a many-row cache: x [A, T, d] appended to cache rows `rows` (A ascending
        ints; the other rows keep their tokens and open-page statistics), row i's first token at rotary position
        positions[i] (ints, or an int64 tensor). The projections and MLP run once over all A x T tokens (one
        weight read per layer instead of one per row); attention stays per row. Returns hidden [A, T, d]
        (pre-norm). No host sync: the lengths come from the cache's host copy."""
        A, T, _ = x.shape
        rows = list(rows)
        offsets = torch.arange(T, device=x.device)
        starts = (positions.to(x.device) if isinstance(positions, torch.Tensor)
                  else upload(np.asarray(positions, dtype=np.int64), x.device))
        cos, sin = self.rotary(starts[:, None] + offsets)
        counts = [0] * cache.lengths.shape[0]
        for row in rows:
            counts[row] = T
        plan = cache.reserve(counts)
        held = cache.host_lengths()  # after the reservation: each row's tokens including the new ones
        c = self.config
        groups = _prefill_groups(rows, held, 2 * c.num_kv_heads * c.head_dim * x.element_size(), x.device)
        # each group's pages, once for every layer (the page table does not change during the call)
        groups = [(idx, n, padded, _page_index(cache.page_table, table_rows, padded, cache.page_size))
                  for idx, table_rows, n in groups for padded in (_key_bucket(n, cache),)]
        for i, layer in enumerate(self.layers):
            q, k, v = layer.self_attn.qkv(layer.input_layernorm(x), cos, sin)
            cache.append(i, plan, k.flatten(0, 1).to(cache.k_pool.dtype), v.flatten(0, 1).to(cache.v_pool.dtype))
            pools = cache.layer(i)
            out = torch.empty_like(q)
            for idx, n, padded, pages in groups:
                keys, values = (_gather_rows(pool, pages, padded).to(q.dtype) for pool in (pools.k_pool, pools.v_pool))
                out[idx] = dense_attention(q[idx], keys, values, causal=True, valid_keys=n)
            x = x + layer.self_attn.o_proj(out.flatten(2))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return x

    @torch.no_grad()
    def decode_step(self, x: torch.Tensor, cache: PagedKVCache, positions: torch.Tensor,
                    sparsity: SparsityConfig, plan: AppendPlan | None = None,
                    rows: torch.Tensor | None = None, width: int | None = None) -> torch.Tensor:
        """One new token per row: x [B, d] at positions int64 [B] -> hidden [B, d] (pre-norm).

        Each layer appends its rotated K/V to the cache, then reads it through the attention entry point
        with `sparsity` (the entry point keeps the first `sparsity.dense_layers` layers dense).
        plan: the caller's `cache.reserve([1] * B)` (None reserves here); reserving outside lets the rest of
        the step, which then runs on the device only, be captured in a CUDA graph (one per plan parity).
        rows: int64 [B] ascending cache rows that x belongs to, when only some rows of the cache take a token
        (continuous batching); None: every row, in order.
        width: read only the first `width` page-table columns (>= every row's held pages). The kernels launch
        programs over every column of the table they get, so a table sized for a long context costs at a short
        one (measured: 16 rows x 4.4K tokens on an H100 with a table of ~3K pages per row).
        """
        return self._decode(x, cache, positions, sparsity, plan, rows, width)[0]

    def fuse(self) -> None:
        """Concatenate every layer's q/k/v and gate/up weights once (see `fused_linear`); `decode_step` does it
        itself at its first call, so call this before capturing a CUDA graph or measuring memory."""
        for layer in self.layers:
            fused_linear(layer.self_attn, ("q_proj", "k_proj", "v_proj"), "_qkv")
            fused_linear(layer.mlp, ("gate_proj", "up_proj"), "_gate_up")

    @torch.no_grad()
    def decode_logits(self, x: torch.Tensor, cache: PagedKVCache, positions: torch.Tensor,
                      sparsity: SparsityConfig, plan: AppendPlan | None = None, rows: torch.Tensor | None = None,
                      width: int | None = None) -> torch.Tensor:
        """`decode_step` then the logits: fp32 [B, V] (the final norm fused into the last residual add)."""
        return self.lm_head(self._decode(x, cache, positions, sparsity, plan, rows, width)[1]).float()

    def _decode(self, x, cache, positions, sparsity, plan, rows, width):
        """(hidden pre-norm, hidden after the final norm) [B, d] of `decode_step` (see the module docstring)."""
        table, lengths = cache.page_table, cache.lengths
        if width is not None and width < table.shape[1]:
            table = table[:, :width].contiguous()  # one small copy per step (the kernels need contiguous rows)
        if rows is not None:
            if plan is None:
                counts = torch.zeros(cache.lengths.shape[0], dtype=torch.int64)
                counts[rows.cpu()] = 1
                plan = cache.reserve(counts)
            table, lengths = table.index_select(0, rows), cache.lengths.index_select(0, rows)
        plan = plan or cache.reserve([1] * x.shape[0])
        if not self.fused_step:
            return self._decode_unfused(x, cache, positions, sparsity, plan, table, lengths)
        ops = FUSED_BACKENDS[self.fused_backend or ("triton" if x.is_cuda else "torch")]
        c = self.config
        nq, nkv, D, eps = c.num_heads, c.num_kv_heads, c.head_dim, c.rms_norm_eps
        B = x.shape[0]
        gemms = self._step_gemms(x)
        h = x.clone()  # the residual stream, updated in place by the fused adds
        normed = ops.add_norm(None, h, self.layers[0].input_layernorm.weight, eps)
        for i, layer in enumerate(self.layers):
            attn, mlp = layer.self_attn, layer.mlp
            qkv = _project(ops, gemms.get("qkv"), normed, *fused_linear(attn, ("q_proj", "k_proj", "v_proj"), "_qkv"))
            if qkv.dim() == 3:  # split-K partials: summed by the rotary pass
                qkv = ops.rotary_sum(qkv, positions, self.inv_freq, nq + nkv, D, x.dtype)
            else:
                ops.rotary(qkv, positions, self.inv_freq, nq + nkv, D)
            q = qkv[:, : nq * D].view(B, nq, D)
            k = qkv[:, nq * D:(nq + nkv) * D].view(B, nkv, D)
            v = qkv[:, (nq + nkv) * D:].view(B, nkv, D)
            cache.append(i, plan, k.to(cache.k_pool.dtype), v.to(cache.v_pool.dtype))
            o = paged_decode_attention(q.to(cache.k_pool.dtype), cache.layer(i), table, lengths,
                                       sparsity, layer_index=i)
            o_out = _project(ops, gemms.get("o"), o.to(x.dtype).flatten(1), attn.o_proj.weight, attn.o_proj.bias)
            normed = ops.add_norm(o_out, h, layer.post_attention_layernorm.weight, eps)
            gate_up = _project(ops, gemms.get("gate_up"), normed,
                               *fused_linear(mlp, ("gate_proj", "up_proj"), "_gate_up"))
            down = gemms.get("down")
            if down is None:
                down_out = mlp.down_proj(ops.silu_mul(gate_up))
            else:  # silu(gate) * up formed on load
                down_out = _add_bias(ops.linear(gate_up, mlp.down_proj.weight, down, silu=True), mlp.down_proj.bias)
            following = self.layers[i + 1].input_layernorm if i + 1 < len(self.layers) else self.norm
            normed = ops.add_norm(down_out, h, following.weight, eps)
        return h, normed

    def _step_gemms(self, x: torch.Tensor) -> dict:
        """The decode step's GEMM plan (kind -> SkinnyConfig; absent: cuBLAS). `step_gemms` None: measured once
        at the first CUDA step of at most 16 rows outside graph capture (`plan_step_gemms`); {}: cuBLAS only."""
        if x.shape[0] > BLOCK_M:
            return {}
        if self.step_gemms is None:
            if not x.is_cuda or self.fused_backend == "torch" or torch.cuda.is_current_stream_capturing():
                return {}
            from unique_asr.models.step_gemms import plan_step_gemms

            self.step_gemms, self.step_gemm_timings = plan_step_gemms(self, x.shape[0])
        return self.step_gemms

    def _decode_unfused(self, x, cache, positions, sparsity, plan, table, lengths):
        """The step as the modules compute it (separate q/k/v and gate/up GEMMs, rotate(), RMSNorm modules):
        the reference of the fused step and the "before" arm of scripts/bench_e2e.py (--unfused)."""
        cos, sin = self.rotary(positions)
        for i, layer in enumerate(self.layers):
            q, k, v = layer.self_attn.qkv(layer.input_layernorm(x), cos, sin)
            cache.append(i, plan, k.to(cache.k_pool.dtype), v.to(cache.v_pool.dtype))
            o = paged_decode_attention(q.to(cache.k_pool.dtype), cache.layer(i), table, lengths,
                                       sparsity, layer_index=i)
            x = x + layer.self_attn.o_proj(o.to(x.dtype).flatten(1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return x, self.norm(x)


def _project(ops, config, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight.T (+ bias): cuBLAS (config None) or the skinny GEMM of `config` ([M, N], or fp32 split-K
    partials [S, M, N] that the next kernel sums)."""
    if config is None:
        return F.linear(x, weight, bias)
    return _add_bias(ops.linear(x, weight, config), bias)


def _add_bias(y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """y (+ bias on the first split-K partial). The measured plan skips biased projections; a plan set by hand
    (tests) may not."""
    if bias is not None:
        (y[0] if y.dim() == 3 else y).add_(bias)
    return y


def _page_index(table: torch.Tensor, rows: torch.Tensor, length: int, page_size: int) -> torch.Tensor:
    """int64 [A, pages]: the physical pages that hold the first `length` tokens of each of `rows` (int64 [A] on
    the table's device), table [B, M] (columns past a row's pages hold -1: the pool's last page, finite values)."""
    return table.index_select(0, rows)[:, : -(-length // page_size)].long()


def _gather_rows(pool: torch.Tensor, pages: torch.Tensor, length: int) -> torch.Tensor:
    """The first `length` tokens of the rows whose pages are `pages` (`_page_index`), in logical order: pool
    [P, S, Hkv, D] -> [A, length, Hkv, D] (one gather for all of them)."""
    return pool[pages].flatten(1, 2)[:, :length]


# Bytes of gathered K + V one batched prefill attention call may hold. A prefill chunk (T = 440) over one row's
# cached keys launches too few attention programs to fill the GPU (32 heads x 4 query blocks); rows that hold the
# same number of tokens (recordings decoded in step) go through one call instead, up to this much gathered.
PREFILL_GATHER_BYTES = 1 << 30


# Key length of a batched prefill's attention call rounded up to a multiple of this (0: not rounded); the keys past
# the row's own are masked (dense_attention's valid_keys; they are pages past the row's end, or the pool's last
# page: finite values). Why: SDPA runs cuDNN's attention here, which builds a graph per new shape, and a
# recording's context grows every window, so each prefill met a new key length. Measured on one H100
# (scripts/bench_prefill.py --growing 7000 12: 16 rows x 440 queries, keys growing by 504 a call from 7000): a
# call at a new key length took 78-233 ms of wall, one at a length already met 5.8 ms; mean over the 12 calls
# exact 174.9 ms, bucket 1024 47.0 ms, bucket 1800 31.5 ms. The whole pipeline (bench_speech_pipeline.py, 16 x 20
# min, rows in step) 30.03 s (median of 4) -> 27.97 s with 1800. The padding costs at most 1800 keys of
# attention a call (a few percent at these lengths), so only devices of PREFILL_KEY_BUCKET_DEVICES pay it: a CPU's
# attention plans nothing per shape.
PREFILL_KEY_BUCKET = 1800
PREFILL_KEY_BUCKET_DEVICES = ("cuda",)


def bucketed_keys(n: int, bucket: int, capacity: int) -> int:
    """n keys rounded up to a multiple of `bucket` (0: n), at most `capacity` (what the page table holds)."""
    return min(-(-n // bucket) * bucket, capacity) if bucket else n


def _key_bucket(n: int, cache: PagedKVCache) -> int:
    """Keys to gather for rows holding n tokens: n rounded up to PREFILL_KEY_BUCKET on the devices that plan per
    shape, within the page table."""
    on = cache.k_pool.device.type in PREFILL_KEY_BUCKET_DEVICES
    return bucketed_keys(n, PREFILL_KEY_BUCKET if on else 0, cache.page_table.shape[1] * cache.page_size)


def _prefill_groups(rows: list[int], held, bytes_per_token: int, device: torch.device):
    """[(indices into `rows`: a slice when consecutive, else int64 [n]; their cache rows, int64 [n] on `device`;
    the tokens each holds)] for `prefill_rows`: rows of equal held length together, at most
    PREFILL_GATHER_BYTES of K + V gathered per group."""
    by_length: dict[int, list[int]] = {}
    for a, row in enumerate(rows):
        by_length.setdefault(int(held[row]), []).append(a)
    groups = []
    for n, members in by_length.items():
        per = max(1, PREFILL_GATHER_BYTES // max(1, n * bytes_per_token))
        for start in range(0, len(members), per):
            part = members[start:start + per]
            idx = (slice(part[0], part[-1] + 1) if part == list(range(part[0], part[-1] + 1))
                   else upload(np.asarray(part, dtype=np.int64), device))
            groups.append((idx, upload(np.asarray([rows[a] for a in part], dtype=np.int64), device), n))
    return groups
