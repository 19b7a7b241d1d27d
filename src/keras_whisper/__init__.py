"""keras-whisper: OpenAI's Whisper as a first-class Keras 3 model.

JAX is the backend when the user has chosen none: set `KERAS_BACKEND` (or a
non-default `backend` in `~/.keras/keras.json`) before importing to choose
another (`torch`, `tensorflow`).
"""

import json as _json
import os as _os
import sys as _sys


def _choose_default_backend() -> None:
    if "KERAS_BACKEND" in _os.environ or "keras" in _sys.modules:
        return
    config = _os.path.join(
        _os.environ.get("KERAS_HOME", _os.path.join(_os.path.expanduser("~"), ".keras")),
        "keras.json",
    )
    try:
        with open(config) as f:
            chosen = _json.load(f).get("backend")
    except (OSError, ValueError):
        chosen = None
    # Keras writes "tensorflow" into a fresh keras.json by itself: not a choice.
    if chosen in (None, "tensorflow"):
        _os.environ["KERAS_BACKEND"] = "jax"


_choose_default_backend()

from keras_whisper.errors import (  # noqa: E402
    AudioError,
    KerasWhisperError,
    PresetError,
    TokenizerError,
    WeightsError,
)

__version__ = "0.1.0"

# Public names, imported on first use so that `import keras_whisper` (and the
# CLI, which picks the backend first) does not import Keras.
_LAZY = {
    "Backbone": "keras_whisper.backbone",
    "WhisperBackbone": "keras_whisper.backbone",
    "WhisperSpeechToText": "keras_whisper.speech_to_text",
    "WhisperTokenizer": "keras_whisper.tokenizer",
    "WhisperAudioConverter": "keras_whisper.audio",
    "load_audio": "keras_whisper.audio",
    "stream_audio": "keras_whisper.audio",
    "DecodingOptions": "keras_whisper.decoding",
}


def __getattr__(name):
    if name == "models":  # keras-hub's namespace: `keras_hub.models.WhisperBackbone`
        import importlib

        return importlib.import_module("keras_whisper.models")
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'keras_whisper' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY, "models"})


__all__ = [
    "AudioError",
    "KerasWhisperError",
    "PresetError",
    "TokenizerError",
    "WeightsError",
    *_LAZY,
]
