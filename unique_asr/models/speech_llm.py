"""Decoder-only speech-LLM: Whisper-style audio encoder -> projector -> Llama/Qwen-style decoder.

Audio enters the decoder as tokens: the text prompt holds `audio_token_id` placeholders, replaced in order by
the projected audio frames (as transformers' Qwen2-Audio / Voxtral do), so the decoder's paged KV cache holds
the recording itself. The encoder is `unique_asr.models.whisper.Encoder`, run by `WhisperModel.encode`.

Projectors (`ProjectorConfig.kind`):
- "stack" (Voxtral, and our own format): stack `factor` consecutive encoder frames -> Linear -> act -> Linear
  (no biases); 1500 frames -> 375 tokens per 30 s window at factor 4.
- "pool" (Qwen2-Audio): average-pool `factor` frames of the encoder's pre-norm output, then the encoder's
  final LayerNorm (held here as `projector.norm`: Qwen2-Audio normalises after pooling), then Linear.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unique_asr.cache.paged_kv import upload
from unique_asr.models.llm import LLM, LLMConfig
from unique_asr.models.whisper import Encoder, WhisperConfig, WhisperModel

ACTIVATIONS = {"gelu": F.gelu, "silu": F.silu}


@dataclass(frozen=True)
class ProjectorConfig:
    """kind: "stack" or "pool" (see module docstring); factor: encoder frames per audio token."""

    kind: str = "stack"
    factor: int = 4
    act: str = "gelu"

    def __post_init__(self) -> None:
        if self.kind not in ("stack", "pool"):
            raise ValueError(f"projector kind must be 'stack' or 'pool', got {self.kind!r}")
        if self.factor < 1 or self.act not in ACTIVATIONS:
            raise ValueError(f"projector needs factor >= 1 and act in {sorted(ACTIVATIONS)}, got {self}")


@dataclass(frozen=True)
class SpeechLLMConfig:
    """encoder: the audio fields of a WhisperConfig (text fields unused); llm; projector; audio_token_id."""

    encoder: WhisperConfig
    llm: LLMConfig
    projector: ProjectorConfig
    audio_token_id: int

    def __post_init__(self) -> None:
        if self.encoder.n_audio_ctx % self.projector.factor:
            raise ValueError(f"{self.encoder.n_audio_ctx} encoder frames do not split into groups of "
                             f"{self.projector.factor}")
        if not 0 <= self.audio_token_id < self.llm.vocab_size:
            raise ValueError(f"audio_token_id {self.audio_token_id} is outside the vocabulary ({self.llm.vocab_size})")

    @property
    def tokens_per_window(self) -> int:
        """Audio tokens one encoder window (n_audio_ctx frames, 30 s for Whisper shapes) becomes."""
        return self.encoder.n_audio_ctx // self.projector.factor

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SpeechLLMConfig":
        return cls(WhisperConfig(**d["encoder"]), LLMConfig(**d["llm"]), ProjectorConfig(**d["projector"]),
                   int(d["audio_token_id"]))


def encoder_config(*, n_mels: int, n_audio_ctx: int, d_model: int, heads: int, layers: int) -> WhisperConfig:
    """A WhisperConfig for an encoder alone (the text fields are placeholders no module uses)."""
    return WhisperConfig(n_mels=n_mels, n_audio_ctx=n_audio_ctx, n_audio_state=d_model, n_audio_head=heads,
                         n_audio_layer=layers, n_vocab=1, n_text_ctx=1, n_text_state=d_model, n_text_head=heads,
                         n_text_layer=0)


class AudioEncoder(nn.Module):
    """Whisper's encoder (`whisper.Encoder`, names `encoder.*`), run by `WhisperModel.encode`; no decoder built."""

    def __init__(self, config: WhisperConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [W, n_mels, 2·n_audio_ctx] -> frames [W, n_audio_ctx, d_audio]."""
        return WhisperModel.encode(self, mel)


class Projector(nn.Module):
    """Encoder frames [W, F, d_audio] -> audio tokens [W, F // factor, d_model]."""

    def __init__(self, c: ProjectorConfig, d_audio: int, d_model: int):
        super().__init__()
        self.config = c
        if c.kind == "pool":
            self.norm = nn.LayerNorm(d_audio)
            self.linear = nn.Linear(d_audio, d_model)
        else:
            self.linear_1 = nn.Linear(c.factor * d_audio, d_model, bias=False)
            self.linear_2 = nn.Linear(d_model, d_model, bias=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        W, Fr, d = frames.shape
        f = self.config.factor
        if self.config.kind == "pool":
            pooled = F.avg_pool1d(frames.transpose(1, 2), f, f).transpose(1, 2)
            return self.linear(self.norm(pooled))
        stacked = frames.reshape(W, Fr // f, f * d)
        return self.linear_2(ACTIVATIONS[self.config.act](self.linear_1(stacked)))


class SpeechLLM(nn.Module):
    """audio (log-mel windows) -> `audio_embeddings` -> placed into the prompt by `embed` -> `self.llm`
    (prefill / decode_step on a paged cache, see unique_asr.models.llm)."""

    def __init__(self, config: SpeechLLMConfig):
        super().__init__()
        self.config = config
        self.audio = AudioEncoder(config.encoder)
        if config.projector.kind == "pool":
            self.audio.encoder.ln_post = nn.Identity()  # the norm runs after pooling, as projector.norm
        self.projector = Projector(config.projector, config.encoder.n_audio_state, config.llm.hidden_size)
        self.llm = LLM(config.llm)

    def audio_embeddings(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [W, n_mels, 2·n_audio_ctx] (one row per window) -> audio tokens [W, tokens_per_window, d_model]."""
        return self.projector(self.audio(mel)).to(self.llm.embed_tokens.weight.dtype)

    def embed(self, ids: torch.Tensor, audio: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings [B, T, d] of ids [B, T] with the audio_token_id placeholders replaced, in row-major
        order, by the rows of audio [N, d] (N = number of placeholders). ids on the host are counted there and
        copied to the device queued, so the host does not wait for the device's earlier work (a decode loop
        that prefills between steps)."""
        weight = self.llm.embed_tokens.weight
        where = (ids == self.config.audio_token_id).reshape(-1).nonzero()[:, 0]
        given = 0 if audio is None else audio.shape[0]
        if where.numel() != given:
            raise ValueError(f"{where.numel()} audio placeholders in the prompt but {given} audio tokens given")
        if ids.device != weight.device:
            ids, where = (upload(t.numpy(), weight.device) for t in (ids, where))
        x = self.llm.embed_tokens(ids)
        if given:
            x = x.reshape(-1, x.shape[-1]).index_copy(0, where, audio.to(x.dtype)).view_as(x)
        return x
