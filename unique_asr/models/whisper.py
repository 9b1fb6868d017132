"""Whisper encoder-decoder with explicit state: preallocated self-attention cache, per-window cross memory.

Our weight names (left) and transformers' `WhisperForConditionalGeneration` names (right, `model.` prefix
dropped; see `unique_asr.models.checkpoint.hf_name_map`):
    encoder.conv1 / conv2                      encoder.conv1 / conv2
    encoder.pos_emb            [1500, d]       encoder.embed_positions.weight
    encoder.blocks.i.attn_ln                   encoder.layers.i.self_attn_layer_norm
    encoder.blocks.i.attn.{q,k,v,out}          encoder.layers.i.self_attn.{q,k,v,out}_proj  (k has no bias)
    encoder.blocks.i.mlp_ln / mlp.fc1 / fc2    encoder.layers.i.final_layer_norm / fc1 / fc2
    encoder.ln_post                            encoder.layer_norm
    decoder.tok_emb            [V, d]          decoder.embed_tokens (also the tied output projection)
    decoder.pos_emb            [448, d]        decoder.embed_positions.weight
    decoder.blocks.i.self_ln / self_attn       decoder.layers.i.self_attn_layer_norm / self_attn
    decoder.blocks.i.cross_ln / cross_attn     decoder.layers.i.encoder_attn_layer_norm / encoder_attn
    decoder.blocks.i.mlp_ln / mlp.fc1 / fc2    decoder.layers.i.final_layer_norm / fc1 / fc2
    decoder.ln                                 decoder.layer_norm
Encoder and text self-attention go through `unique_asr.attention.dense_attention` in the [B, T, H, D] layout;
decoder cross-attention reads a memory object (`unique_asr.models.cross_memory`): contiguous and dense, paged
and sparse (SparsityConfig), or soft-gated for training (SoftGateConfig).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unique_asr.attention import dense_attention
from unique_asr.config import SparsityConfig
from unique_asr.models.cpu_memory import CpuCrossMemory
from unique_asr.models.cross_memory import CrossMemory, GatedCrossMemory, PagedCrossMemory, SoftGateConfig

__all__ = ["CrossMemory", "Encoder", "SelfAttentionCache", "SoftGateConfig", "WhisperConfig", "WhisperModel"]


@dataclass(frozen=True)
class WhisperConfig:
    """Shape of a Whisper model (OpenAI's field names)."""

    n_mels: int = 80
    n_audio_ctx: int = 1500
    n_audio_state: int = 512
    n_audio_head: int = 8
    n_audio_layer: int = 6
    n_vocab: int = 51865
    n_text_ctx: int = 448
    n_text_state: int = 512
    n_text_head: int = 8
    n_text_layer: int = 6

    @classmethod
    def from_hf(cls, hf) -> "WhisperConfig":
        """From a transformers `WhisperConfig`."""
        return cls(
            n_mels=hf.num_mel_bins,
            n_audio_ctx=hf.max_source_positions,
            n_audio_state=hf.d_model,
            n_audio_head=hf.encoder_attention_heads,
            n_audio_layer=hf.encoder_layers,
            n_vocab=hf.vocab_size,
            n_text_ctx=hf.max_target_positions,
            n_text_state=hf.d_model,
            n_text_head=hf.decoder_attention_heads,
            n_text_layer=hf.decoder_layers,
        )

    def to_hf_kwargs(self) -> dict:
        """Keyword arguments for a transformers `WhisperConfig` of the same shape (FFN width 4·d)."""
        return dict(
            num_mel_bins=self.n_mels,
            max_source_positions=self.n_audio_ctx,
            d_model=self.n_audio_state,
            encoder_attention_heads=self.n_audio_head,
            encoder_layers=self.n_audio_layer,
            vocab_size=self.n_vocab,
            max_target_positions=self.n_text_ctx,
            decoder_attention_heads=self.n_text_head,
            decoder_layers=self.n_text_layer,
            encoder_ffn_dim=4 * self.n_audio_state,
            decoder_ffn_dim=4 * self.n_text_state,
        )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SelfAttentionCache:
    """Preallocated decoder self-attention KV: k, v [L, B, max_len, H, D]; lengths int64 [B] (tokens per row).

    Shapes never change during decoding, so a one-token step has static shapes; `decode` writes in place.
    """

    k: torch.Tensor
    v: torch.Tensor
    lengths: torch.Tensor

    @classmethod
    def allocate(
        cls,
        config: WhisperConfig,
        batch: int,
        max_len: int | None = None,
        *,
        device=None,
        dtype=torch.float32,
    ) -> "SelfAttentionCache":
        """Zeroed cache for `batch` rows of at most `max_len` (default n_text_ctx) tokens."""
        max_len = config.n_text_ctx if max_len is None else max_len
        if not 0 < max_len <= config.n_text_ctx:
            raise ValueError(f"max_len must be in [1, {config.n_text_ctx}], got {max_len}")
        h = config.n_text_head
        shape = (config.n_text_layer, batch, max_len, h, config.n_text_state // h)
        return cls(
            torch.zeros(shape, device=device, dtype=dtype),
            torch.zeros(shape, device=device, dtype=dtype),
            torch.zeros(batch, device=device, dtype=torch.int64),
        )

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def reorder(self, index: torch.Tensor) -> None:
        """Rows become rows `index` (int64 [B], e.g. beam parents), in place: storage and shapes stay.
        Off CUDA only the filled slots move (base, 15 beam rows: the whole 448-slot cache is 82 MB a step)."""
        k, v = self.k, self.v
        if not k.is_cuda:
            filled = int(self.lengths.max())
            k, v = k[:, :, :filled], v[:, :, :filled]
        k.copy_(k.index_select(1, index))
        v.copy_(v.index_select(1, index))
        self.lengths.copy_(self.lengths.index_select(0, index))

    def reset(self) -> None:
        """Forget every row's tokens (the buffers are reused for the next batch)."""
        self.lengths.zero_()

    @property
    def rows(self) -> int:
        return self.k.shape[1]

    def save(self) -> torch.Tensor:
        """What a step changes besides the slots it writes: the lengths (for `restore` after a warm-up)."""
        return self.lengths.clone()

    def restore(self, saved: torch.Tensor) -> None:
        self.lengths.copy_(saved)


class Attention(nn.Module):
    """Multi-head attention projections (Whisper: no bias on the key projection)."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.out = (
            nn.Linear(d, d),
            nn.Linear(d, d, bias=False),
            nn.Linear(d, d),
            nn.Linear(d, d),
        )

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, d] -> [B, T, H, D]."""
        return x.unflatten(-1, (self.heads, -1))

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v [B, T, H, D] of x [B, T, d]: one int8 GEMM where quantize_int8 fused the three (`qkv_int8`;
        the input is then quantized once instead of three times), else the three projections."""
        fused = self._modules.get("qkv_int8")  # a dict lookup: no AttributeError raised per call on other paths
        if fused is not None:
            q, k, v = fused(x).chunk(3, dim=-1)
            return self.split(q), self.split(k), self.split(v)
        return self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))

    def kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v [B, T, H, D] of x [B, T, d] (cross-attention memory; fused like `qkv`: `kv_int8`)."""
        fused = self._modules.get("kv_int8")
        if fused is not None:
            k, v = fused(x).chunk(2, dim=-1)
            return self.split(k), self.split(v)
        return self.split(self.k(x)), self.split(self.v(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Bidirectional self-attention (encoder): x [B, T, d] -> [B, T, d]."""
        return self.out(dense_attention(*self.qkv(x)).flatten(2))


class MLP(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class EncoderBlock(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.attn_ln, self.attn, self.mlp_ln, self.mlp = (
            nn.LayerNorm(d),
            Attention(d, heads),
            nn.LayerNorm(d),
            MLP(d),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


class DecoderBlock(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.self_ln, self.self_attn = nn.LayerNorm(d), Attention(d, heads)
        self.cross_ln, self.cross_attn = nn.LayerNorm(d), Attention(d, heads)
        self.mlp_ln, self.mlp = nn.LayerNorm(d), MLP(d)


class Encoder(nn.Module):
    def __init__(self, c: WhisperConfig):
        super().__init__()
        d = c.n_audio_state
        self.conv1 = nn.Conv1d(c.n_mels, d, 3, padding=1)
        self.conv2 = nn.Conv1d(d, d, 3, stride=2, padding=1)
        self.register_buffer("pos_emb", torch.zeros(c.n_audio_ctx, d))
        self.blocks = nn.ModuleList(EncoderBlock(d, c.n_audio_head) for _ in range(c.n_audio_layer))
        self.ln_post = nn.LayerNorm(d)


class Decoder(nn.Module):
    def __init__(self, c: WhisperConfig):
        super().__init__()
        d = c.n_text_state
        # zero init (weights always come from a checkpoint): random init on the meta device costs seconds
        self.tok_emb = nn.Embedding(c.n_vocab, d, _weight=torch.zeros(c.n_vocab, d))
        self.pos_emb = nn.Parameter(torch.zeros(c.n_text_ctx, d))
        self.blocks = nn.ModuleList(DecoderBlock(d, c.n_text_head) for _ in range(c.n_text_layer))
        self.ln = nn.LayerNorm(d)


LOGIT_ROW_ALIGN = 64  # inference logits GEMM: vocabulary rows padded to a multiple of this


class WhisperModel(nn.Module):
    """Whisper with explicit state: `encode` -> `cross_memory` (once per window) -> `decode` per step.

    The "whisper" implementation of the model-family interface (unique_asr.models.family): `memory` is
    `cross_memory`, the state a `SelfAttentionCache`, `step` is `decode`.
    """

    family = "whisper"
    kind = "encoder-decoder"

    def __init__(self, config: WhisperConfig, sparsity: SparsityConfig | None = None):
        super().__init__()
        if config.n_audio_state != config.n_text_state:
            raise ValueError("encoder and decoder widths differ; Whisper checkpoints use one width")
        self.config = config
        self.sparsity = sparsity or SparsityConfig()
        self.encoder, self.decoder = Encoder(config), Decoder(config)

    def with_sparsity(self, sparsity: SparsityConfig) -> "WhisperModel":
        """The same weights (shared, not copied) whose `cross_memory` defaults to `sparsity`."""
        model = copy.copy(self)
        model.sparsity = sparsity
        return model

    def memory(self, encoded: torch.Tensor) -> CrossMemory | PagedCrossMemory:
        """Family interface: the cross memory of encoder states [B, F, d] (with the model's sparsity)."""
        return self.cross_memory(encoded)

    def allocate_state(self, rows: int, capacity: int) -> SelfAttentionCache:
        """Family interface: a zeroed self-attention cache of `rows` rows x `capacity` tokens."""
        weight = self.decoder.tok_emb.weight
        return SelfAttentionCache.allocate(self.config, rows, capacity, device=weight.device, dtype=weight.dtype)

    def step(self, tokens: torch.Tensor, state: SelfAttentionCache, memory) -> torch.Tensor:
        """Family interface: `decode`."""
        return self.decode(tokens, state, memory)

    def expand(self, state: SelfAttentionCache, memory, index: torch.Tensor):
        """Family interface: new (state, memory) whose row i copies row index[i] (a window's beams/samples)."""
        rows = SelfAttentionCache(
            state.k.index_select(1, index), state.v.index_select(1, index), state.lengths.index_select(0, index)
        )
        return rows, memory.index_select(index)

    def reorder(self, state: SelfAttentionCache, memory, index: torch.Tensor) -> None:
        """Family interface: beams continue their parents. The rows of one window share its cross memory, so
        only the self-attention cache moves."""
        state.reorder(index)

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [B, n_mels, 2·n_audio_ctx] (log-mel, 3000 frames for 30 s) -> states [B, n_audio_ctx, d]."""
        c, e = self.config, self.encoder
        if mel.dim() != 3 or mel.shape[1] != c.n_mels or mel.shape[2] != 2 * c.n_audio_ctx:
            raise ValueError(f"expected mel [B, {c.n_mels}, {2 * c.n_audio_ctx}], got {tuple(mel.shape)}")
        x = F.gelu(e.conv1(mel.to(e.conv1.weight.dtype)))
        x = F.gelu(e.conv2(x)).transpose(1, 2)
        x = x + e.pos_emb
        for block in e.blocks:
            x = block(x)
        return e.ln_post(x)

    def _cross_kv(self, encoder_out: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention k, v [B, F, H, D] of decoder layer `layer` for encoder_out [B, F, d]."""
        return self.decoder.blocks[layer].cross_attn.kv(encoder_out)

    def cross_memory(
        self,
        encoder_out: torch.Tensor,
        *,
        sparsity: SparsityConfig | None = None,
        gate: SoftGateConfig | None = None,
        out: PagedCrossMemory | None = None,
    ) -> CrossMemory | PagedCrossMemory:
        """The decoder's memory of encoder_out [B, F, d], computed once per window batch.

        gate: a differentiable contiguous memory read through soft-mask attention (training). Else
        sparsity (default: the model's): mode "dense" gives CrossMemory with k, v [L, B, F, H, D] (on the CPU a
        CpuCrossMemory, whose k, v are views of that shape); any other
        mode a PagedCrossMemory (pages, stats, backend from `sparsity`), written into `out`'s preallocated
        pools when given (static addresses for a captured decode step).
        """
        layers = range(len(self.decoder.blocks))
        c, (B, frames, _) = self.config, encoder_out.shape
        if gate is not None:
            k, v = (torch.stack(t) for t in zip(*(self._cross_kv(encoder_out, i) for i in layers)))
            return GatedCrossMemory(k, v, gate)
        if not (sparsity or self.sparsity).sparse and encoder_out.device.type == "cpu":
            # the CPU step's layout, shared by a window's beams (models/cpu_memory.py)
            return CpuCrossMemory.build(len(layers), lambda i: self._cross_kv(encoder_out, i), encoder_out,
                                        c.n_text_head)
        if not (sparsity or self.sparsity).sparse:
            # Written layer by layer into the final tensors: torch.stack of per-layer lists held every layer
            # twice at its peak (base, batch 16, CPU: +0.59 GB of a 1.99 GB run, scripts/bench_memory.py).
            shape = (len(layers), B, frames, c.n_text_head, c.n_text_state // c.n_text_head)
            k, v = encoder_out.new_empty(shape), encoder_out.new_empty(shape)
            for i in layers:
                layer_k, layer_v = self._cross_kv(encoder_out, i)
                k[i].copy_(layer_k)
                v[i].copy_(layer_v)
                del layer_k, layer_v
            return CrossMemory(k, v)
        if out is None:
            out = PagedCrossMemory.allocate(
                num_layers=c.n_text_layer, max_batch=B, frames=frames, heads=c.n_text_head,
                head_dim=c.n_text_state // c.n_text_head, sparsity=sparsity or self.sparsity,
                device=encoder_out.device, dtype=encoder_out.dtype)
        out.fill(lambda layer: self._cross_kv(encoder_out, layer), B)
        return out

    def decode(
        self, tokens: torch.Tensor, self_cache: SelfAttentionCache, cross: CrossMemory | PagedCrossMemory
    ) -> torch.Tensor:
        """Run tokens [B, T] int64 through the decoder; returns logits [B, T, V] (float32).

        Token i of row b sits at position self_cache.lengths[b] + i. Their keys/values are written into
        self_cache at those positions and lengths grows by T (in place). T == 1 is the static-shape step
        (ragged lengths allowed; no host sync, so the caller keeps lengths < max_len, and it can be captured
        in a CUDA graph); T > 1 (prompt prefill) needs every row at the same length and checks the bound.
        """
        B, T = tokens.shape
        if self_cache.k.shape[1] != B or cross.batch != B:
            raise ValueError(
                f"batch mismatch: tokens {B}, cache {self_cache.k.shape[1]}, cross {cross.batch}"
            )
        positions = self_cache.lengths[:, None] + torch.arange(T, device=tokens.device)
        start = None
        if T > 1:
            if bool((self_cache.lengths != self_cache.lengths[0]).any()):
                raise ValueError("multi-token decode needs every row of the cache at the same length")
            start = int(self_cache.lengths[0])
        if start is not None and start + T > self_cache.max_len:
            raise ValueError(f"{start + T} tokens exceed the cache's max_len {self_cache.max_len}")
        filled = None
        if start is None and not tokens.is_cuda:
            # One-token step off CUDA (no graph capture, host reads are free): attend over the filled slots
            # only, not the whole preallocated cache under a mask (base, 3 rows at step 40 of a 448-slot
            # cache: 0.57 -> 0.06 ms per layer).
            lo, hi = self_cache.lengths.aminmax()
            filled = (int(hi) + 1, bool(lo != hi))
        d = self.decoder
        rows = torch.arange(B, device=tokens.device)[:, None].expand(B, T)

        def self_attention(layer: int, block: DecoderBlock, x: torch.Tensor) -> torch.Tensor:
            return self._self_attention(block, x, self_cache, layer, rows, positions, start, filled)

        logits = self._blocks(d.tok_emb(tokens) + d.pos_emb[positions], self_attention, cross)
        self_cache.lengths.add_(T)
        return logits

    def forward_train(
        self, mel: torch.Tensor, tokens: torch.Tensor, gate: SoftGateConfig = SoftGateConfig()
    ) -> torch.Tensor:
        """Teacher-forced forward for fine-tuning: mel [B, n_mels, 3000], tokens int64 [B, T] -> logits
        [B, T, V] (float32). Text self-attention is causal and dense (no cache); cross-attention is dense,
        soft-gated or hard-masked by `gate` (`SoftGateConfig`). Differentiable in every weight."""
        T = tokens.shape[1]
        if T > self.config.n_text_ctx:
            raise ValueError(f"{T} tokens exceed n_text_ctx {self.config.n_text_ctx}")
        cross = self.cross_memory(self.encode(mel), gate=gate)

        def self_attention(layer: int, block: DecoderBlock, x: torch.Tensor) -> torch.Tensor:
            a = block.self_attn
            return a.out(dense_attention(*a.qkv(x), causal=True).flatten(2))

        d = self.decoder
        return self._blocks(d.tok_emb(tokens) + d.pos_emb[:T], self_attention, cross)

    def _blocks(self, x: torch.Tensor, self_attention, cross) -> torch.Tensor:
        """Decoder blocks over embedded tokens x [B, T, d] -> logits [B, T, V] (float32);
        self_attention(layer, block, normed x) -> [B, T, d]; cross: a memory with `attend(layer, q)`."""
        d = self.decoder
        for layer, block in enumerate(d.blocks):
            x = x + self_attention(layer, block, block.self_ln(x))
            a, h = block.cross_attn, block.cross_ln(x)
            x = x + a.out(cross.attend(layer, a.split(a.q(h))).flatten(2))
            x = x + block.mlp(block.mlp_ln(x))
        return self._logits(d.ln(x))

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        """h [B, T, d] -> logits [B, T, V] float32 over the tied token embedding [V, d].

        Whisper's vocabulary is odd (51865 rows; 51864 for .en), and cuBLAS runs that product with unaligned
        kernels that stream the embedding several times slower than its bytes allow (154 µs for whisper-small
        at batch 64 on the H200, where reading 80 MB takes ~17 µs; scripts/bench_e2e.py whisper-step
        --profile). On CUDA without autograd the product runs against a copy padded with zero rows to a
        multiple of LOGIT_ROW_ALIGN, cached and rebuilt whenever the embedding changes (in-place updates
        included: the key holds the tensor's version counter). The copy lives on the decoder module, so the
        `with_sparsity` views of one model share it.
        """
        d = self.decoder
        if getattr(d, "logits_int8", None) is not None:  # dtype int8 on the CPU (models/quantize.py)
            return d.logits_int8(h).float()
        w = d.tok_emb.weight
        if not h.is_cuda or (torch.is_grad_enabled() and (h.requires_grad or w.requires_grad)):
            return (h @ w.T).float()
        key = (w.data_ptr(), w._version, w.dtype, w.device)
        if getattr(d, "_padded_key", None) != key:
            d._padded_weight = F.pad(w.detach(), (0, 0, 0, -w.shape[0] % LOGIT_ROW_ALIGN))
            d._padded_key = key
        return (h @ d._padded_weight.T)[..., : w.shape[0]].float().contiguous()

    @staticmethod
    def _self_attention(
        block: DecoderBlock, x, cache: SelfAttentionCache, layer: int, rows, positions, start, filled=None
    ):
        """Causal self-attention of x [B, T, d] over cached tokens plus these, writing K/V into the cache.
        filled: (slots in use after this step, rows of unequal length) of a one-token step that may read only
        the filled slots (None: the whole cache, masked by each row's length)."""
        a = block.self_attn
        q, k, v = a.qkv(x)
        cache.k[layer].index_put_((rows, positions), k.to(cache.k.dtype))
        cache.v[layer].index_put_((rows, positions), v.to(cache.v.dtype))
        if filled is not None:
            n, ragged = filled
            lengths = positions[:, -1] + 1 if ragged else None
            o = dense_attention(q, cache.k[layer, :, :n], cache.v[layer, :, :n], key_lengths=lengths)
        elif start is None:
            o = dense_attention(q, cache.k[layer], cache.v[layer], key_lengths=positions[:, -1] + 1)
        else:
            end = start + x.shape[1]
            o = dense_attention(q, cache.k[layer, :, :end], cache.v[layer, :, :end], causal=True)
        return a.out(o.flatten(2))
