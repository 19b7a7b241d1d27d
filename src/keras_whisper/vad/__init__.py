"""Voice activity detection: Silero VAD v6 as a Keras layer, and speech timestamps.

The weights come from the `silero-vad` PyPI package (`pip install 'keras-whisper[vad]'`), read
as a file: neither `silero_vad` nor PyTorch is imported. See `docs/vad.md`.

Examples:
```python
from keras_whisper import vad

detector = vad.SileroVAD.from_package()
audio = keras_whisper.audio.load_audio("speech.wav")
probs = detector.speech_probabilities(audio)  # one per 32 ms
segments = vad.get_speech_timestamps(audio, vad=detector, speech_probs=probs)
pieces = vad.collect_chunks(audio, segments, max_duration_s=30)
```
"""

from keras_whisper.vad.constants import (
    CHUNK_SAMPLES,
    CONTEXT_SAMPLES,
    SAMPLE_RATE,
    WINDOW_SAMPLES,
)
from keras_whisper.vad.timestamps import (
    CollectedChunk,
    TimestampMap,
    VadOptions,
    collect_chunks,
    default_vad,
    get_speech_timestamps,
    group_segments,
    speech_timestamps_from_probs,
)
from keras_whisper.vad.weights import (
    INSTALL_HINT,
    SILERO_VAD_VERSION,
    MissingVADWeightsError,
    load_weights_file,
    package_weights_path,
)

# The model imports Keras: loaded on first use, so the timestamps and the weight reader work
# without it.
_LAZY = {"SileroVAD", "frame_windows"}


def __getattr__(name):
    if name in _LAZY:
        from keras_whisper.vad import model

        value = getattr(model, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'keras_whisper.vad' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = [
    "CHUNK_SAMPLES",
    "CONTEXT_SAMPLES",
    "INSTALL_HINT",
    "SAMPLE_RATE",
    "SILERO_VAD_VERSION",
    "WINDOW_SAMPLES",
    "CollectedChunk",
    "MissingVADWeightsError",
    "SileroVAD",
    "TimestampMap",
    "VadOptions",
    "collect_chunks",
    "default_vad",
    "frame_windows",
    "get_speech_timestamps",
    "group_segments",
    "load_weights_file",
    "package_weights_path",
    "speech_timestamps_from_probs",
]
