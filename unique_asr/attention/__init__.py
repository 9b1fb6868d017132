"""The one attention entry point both model families call; backends are resolved by name."""

from unique_asr.attention.dense import dense_attention

__all__ = ["dense_attention"]
