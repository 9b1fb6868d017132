"""Model code (Whisper), foreign weight formats, the model registry and the tokenizer."""

from unique_asr.models.loader import ModelInfo, load_whisper
from unique_asr.models.registry import BUNDLED, DEFAULT_MODEL
from unique_asr.models.tokenizer import WhisperTokenizer
from unique_asr.models.whisper import CrossMemory, SelfAttentionCache, WhisperConfig, WhisperModel

__all__ = [
    "BUNDLED",
    "DEFAULT_MODEL",
    "CrossMemory",
    "ModelInfo",
    "SelfAttentionCache",
    "WhisperConfig",
    "WhisperModel",
    "WhisperTokenizer",
    "load_whisper",
]
