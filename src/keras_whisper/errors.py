"""Error types of keras-whisper, one per family, each message saying what to do."""


class KerasWhisperError(Exception):
    """Base class of every error raised on purpose by keras-whisper."""


class PresetError(KerasWhisperError, ValueError):
    """A preset handle, directory or its files are unknown, missing or malformed."""


class WeightsError(KerasWhisperError, ValueError):
    """A weight file is truncated, corrupt or does not fit the model's config."""


class AudioError(KerasWhisperError, ValueError):
    """Audio that cannot be read, decoded or turned into features."""


class TokenizerError(KerasWhisperError, ValueError):
    """Text or token ids the Whisper tokenizer cannot handle."""


class OutOfMemoryError(KerasWhisperError, MemoryError):
    """The accelerator ran out of memory; the message says what to try (a smaller batch)."""
