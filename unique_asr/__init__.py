"""unique-asr: long-form transcription with UNIQUE top-k page-sparse attention."""

from unique_asr.config import DecodeOptions, SparsityConfig, TranscribeOptions
from unique_asr.errors import AudioError, MissingToolError, ModelError, OutputError, UniqueASRError
from unique_asr.types import Segment, TranscriptionInfo, Word

__version__ = "0.1.0"

__all__ = [
    "AudioError",
    "DecodeOptions",
    "MissingToolError",
    "ModelError",
    "OutputError",
    "Segment",
    "SparsityConfig",
    "TranscribeOptions",
    "TranscriptionInfo",
    "UniqueASRError",
    "Word",
]
