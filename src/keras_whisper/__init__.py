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

from keras_whisper.backbone import Backbone, WhisperBackbone  # noqa: E402
from keras_whisper.errors import (  # noqa: E402
    AudioError,
    KerasWhisperError,
    PresetError,
    TokenizerError,
    WeightsError,
)

__version__ = "0.1.0"

__all__ = [
    "AudioError",
    "Backbone",
    "KerasWhisperError",
    "PresetError",
    "TokenizerError",
    "WeightsError",
    "WhisperBackbone",
]
