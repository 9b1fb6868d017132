"""unique-asr: long-form transcription with UNIQUE top-k page-sparse attention."""

from unique_asr.config import DecodeOptions, SparsityConfig, TranscribeOptions
from unique_asr.errors import AudioError, MissingToolError, ModelError, OutputError, UniqueASRError
from unique_asr.types import Segment, TranscriptionInfo, Word

__version__ = "0.1.0"


def __getattr__(name: str):
    # load_model pulls in torch and the model stack: import it on first use, so `import unique_asr` stays light.
    if name == "load_model":
        from unique_asr.api import load_model

        return load_model
    raise AttributeError(f"module 'unique_asr' has no attribute {name!r}")


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
    "load_model",
]
