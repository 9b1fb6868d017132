"""Short names of the published Whisper checkpoints -> their Hugging Face hub ids, with the facts a
checkpoint folder may not carry: OpenAI's alignment heads (cross-attention heads whose attention follows
the audio; word timestamps use them) and whether the model is English-only.

Alignment heads are OpenAI's published table (openai-whisper `_ALIGNMENT_HEADS`, decoded to (layer, head)
pairs). This module imports nothing, so the command line's --help can list the names without torch. A folder's generation_config.json `alignment_heads` wins over this table; models in neither (the
distil models, fine-tunes) use every head of the upper half of the decoder layers, openai-whisper's default.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WhisperName:
    hub_id: str
    alignment_heads: tuple[tuple[int, int], ...] | None = None


_OPENAI_HEADS: dict[str, tuple[tuple[int, int], ...]] = {
    "tiny.en": ((1, 0), (2, 0), (2, 5), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4)),
    "tiny": ((2, 2), (3, 0), (3, 2), (3, 3), (3, 4), (3, 5)),
    "base.en": ((3, 3), (4, 7), (5, 1), (5, 5), (5, 7)),
    "base": ((3, 1), (4, 2), (4, 3), (4, 7), (5, 1), (5, 2), (5, 4), (5, 6)),
    "small.en": ((6, 6), (7, 0), (7, 3), (7, 8), (8, 2), (8, 5), (8, 7), (9, 0), (9, 4), (9, 8), (9, 10), (10, 0),
                 (10, 1), (10, 2), (10, 3), (10, 6), (10, 11), (11, 2), (11, 4)),
    "small": ((5, 3), (5, 9), (8, 0), (8, 4), (8, 7), (8, 8), (9, 0), (9, 7), (9, 9), (10, 5)),
    "medium.en": ((11, 4), (14, 1), (14, 12), (14, 14), (15, 4), (16, 0), (16, 4), (16, 9), (17, 12), (17, 14),
                  (18, 7), (18, 10), (18, 15), (20, 0), (20, 3), (20, 9), (20, 14), (21, 12)),
    "medium": ((13, 15), (15, 4), (15, 15), (16, 1), (20, 0), (23, 4)),
    "large-v1": ((9, 19), (11, 2), (11, 4), (11, 17), (22, 7), (22, 11), (22, 17), (23, 2), (23, 15)),
    "large-v2": ((10, 12), (13, 17), (16, 11), (16, 12), (16, 13), (17, 15), (17, 16), (18, 4), (18, 11), (18, 19),
                 (19, 11), (21, 2), (21, 3), (22, 3), (22, 9), (22, 12), (23, 5), (23, 7), (23, 13), (25, 5), (26, 1),
                 (26, 12), (27, 15)),
    "large-v3": ((7, 0), (10, 17), (12, 18), (13, 12), (16, 1), (17, 14), (19, 11), (21, 4), (24, 1), (25, 6)),
    "large-v3-turbo": ((2, 4), (2, 11), (3, 3), (3, 6), (3, 11), (3, 14)),
}

WHISPER_NAMES: dict[str, WhisperName] = {
    **{name: WhisperName(f"openai/whisper-{name}", heads) for name, heads in _OPENAI_HEADS.items()},
    "large": WhisperName("openai/whisper-large-v3", _OPENAI_HEADS["large-v3"]),
    "turbo": WhisperName("openai/whisper-large-v3-turbo", _OPENAI_HEADS["large-v3-turbo"]),
    "distil-small.en": WhisperName("distil-whisper/distil-small.en"),
    "distil-medium.en": WhisperName("distil-whisper/distil-medium.en"),
    "distil-large-v2": WhisperName("distil-whisper/distil-large-v2"),
    "distil-large-v3": WhisperName("distil-whisper/distil-large-v3"),
    "distil-large-v3.5": WhisperName("distil-whisper/distil-large-v3.5"),
}

_BY_HUB_ID = {entry.hub_id: entry for entry in WHISPER_NAMES.values()}


def known_alignment_heads(name_or_hub_id: str) -> tuple[tuple[int, int], ...] | None:
    """OpenAI's alignment heads for a short name or its hub id; None when not published."""
    entry = WHISPER_NAMES.get(name_or_hub_id) or _BY_HUB_ID.get(name_or_hub_id)
    return entry.alignment_heads if entry else None


def default_alignment_heads(n_layers: int, n_heads: int) -> tuple[tuple[int, int], ...]:
    """openai-whisper's fallback: every head of the upper half of the decoder layers."""
    return tuple((layer, head) for layer in range(n_layers // 2, n_layers) for head in range(n_heads))
