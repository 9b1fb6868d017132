"""Typed errors for user mistakes and bad input: the CLI prints them as one line, never a traceback."""


class UniqueASRError(Exception):
    """Base class of every error the toolkit raises on purpose."""


class AudioError(UniqueASRError):
    """The audio could not be read: empty, truncated, corrupt, not audio, or an unsupported codec."""


class MissingToolError(UniqueASRError):
    """An external program (ffmpeg) is needed for this input and is not installed."""


class ModelError(UniqueASRError):
    """A model could not be found, downloaded, verified or converted."""


class OutputError(UniqueASRError):
    """Results could not be written (unwritable directory, full disk)."""
