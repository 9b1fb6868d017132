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
All attention goes through `unique_asr.attention.dense_attention` in the [B, T, H, D] layout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unique_asr.attention import dense_attention


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
        """Rows become rows `index` (int64 [B], e.g. beam parents), in place: storage and shapes stay."""
        self.k.copy_(self.k.index_select(1, index))
        self.v.copy_(self.v.index_select(1, index))
        self.lengths.copy_(self.lengths.index_select(0, index))

    def reset(self) -> None:
        """Forget every row's tokens (the buffers are reused for the next batch)."""
        self.lengths.zero_()


@dataclass(frozen=True)
class CrossMemory:
    """Cross-attention keys/values of one batch of windows, computed once: k, v [L, B, F, H, D]."""

    k: torch.Tensor
    v: torch.Tensor

    def index_select(self, index: torch.Tensor) -> "CrossMemory":
        """Memory whose row i is row index[i] (int64 [B']), e.g. to expand windows into beams."""
        return CrossMemory(self.k.index_select(1, index), self.v.index_select(1, index))


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Bidirectional self-attention (encoder): x [B, T, d] -> [B, T, d]."""
        o = dense_attention(self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x)))
        return self.out(o.flatten(2))


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


class WhisperModel(nn.Module):
    """Whisper with explicit state: `encode` -> `cross_memory` (once per window) -> `decode` per step."""

    def __init__(self, config: WhisperConfig):
        super().__init__()
        if config.n_audio_state != config.n_text_state:
            raise ValueError("encoder and decoder widths differ; Whisper checkpoints use one width")
        self.config = config
        self.encoder, self.decoder = Encoder(config), Decoder(config)

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

    def cross_memory(self, encoder_out: torch.Tensor) -> CrossMemory:
        """Per-layer cross-attention K, V of encoder_out [B, F, d]: CrossMemory with k, v [L, B, F, H, D]."""
        blocks = self.decoder.blocks
        k = torch.stack([b.cross_attn.split(b.cross_attn.k(encoder_out)) for b in blocks])
        v = torch.stack([b.cross_attn.split(b.cross_attn.v(encoder_out)) for b in blocks])
        return CrossMemory(k, v)

    def decode(
        self, tokens: torch.Tensor, self_cache: SelfAttentionCache, cross: CrossMemory
    ) -> torch.Tensor:
        """Run tokens [B, T] int64 through the decoder; returns logits [B, T, V] (float32).

        Token i of row b sits at position self_cache.lengths[b] + i. Their keys/values are written into
        self_cache at those positions and lengths grows by T (in place). T == 1 is the static-shape step
        (ragged lengths allowed; no host sync, so the caller keeps lengths < max_len); T > 1 (prompt prefill)
        needs every row at the same length and checks the bound.
        """
        B, T = tokens.shape
        if self_cache.k.shape[1] != B or cross.k.shape[1] != B:
            raise ValueError(
                f"batch mismatch: tokens {B}, cache {self_cache.k.shape[1]}, cross {cross.k.shape[1]}"
            )
        positions = self_cache.lengths[:, None] + torch.arange(T, device=tokens.device)
        start = None
        if T > 1:
            if bool((self_cache.lengths != self_cache.lengths[0]).any()):
                raise ValueError("multi-token decode needs every row of the cache at the same length")
            start = int(self_cache.lengths[0])
        if start is not None and start + T > self_cache.max_len:
            raise ValueError(f"{start + T} tokens exceed the cache's max_len {self_cache.max_len}")
        d = self.decoder
        x = d.tok_emb(tokens) + d.pos_emb[positions]
        rows = torch.arange(B, device=tokens.device)[:, None].expand(B, T)
        for layer, block in enumerate(d.blocks):
            x = x + self._self_attention(block, block.self_ln(x), self_cache, layer, rows, positions, start)
            x = x + self._cross_attention(block, block.cross_ln(x), cross, layer)
            x = x + block.mlp(block.mlp_ln(x))
        self_cache.lengths.add_(T)
        return (d.ln(x) @ d.tok_emb.weight.T).float()

    @staticmethod
    def _self_attention(
        block: DecoderBlock, x, cache: SelfAttentionCache, layer: int, rows, positions, start
    ):
        """Causal self-attention of x [B, T, d] over cached tokens plus these, writing K/V into the cache."""
        a = block.self_attn
        cache.k[layer].index_put_((rows, positions), a.split(a.k(x)).to(cache.k.dtype))
        cache.v[layer].index_put_((rows, positions), a.split(a.v(x)).to(cache.v.dtype))
        q = a.split(a.q(x))
        if start is None:
            o = dense_attention(q, cache.k[layer], cache.v[layer], key_lengths=positions[:, -1] + 1)
        else:
            end = start + x.shape[1]
            o = dense_attention(q, cache.k[layer, :, :end], cache.v[layer, :, :end], causal=True)
        return a.out(o.flatten(2))

    @staticmethod
    def _cross_attention(block: DecoderBlock, x, cross: CrossMemory, layer: int) -> torch.Tensor:
        """The one place where decoder queries read the encoder memory (to become paged + sparse later)."""
        a = block.cross_attn
        o = dense_attention(a.split(a.q(x)), cross.k[layer], cross.v[layer])
        return a.out(o.flatten(2))
