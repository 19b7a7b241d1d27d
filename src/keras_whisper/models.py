"""keras-hub's `keras_hub.models` names for keras-whisper's classes.

Code written against keras-hub runs with one changed import:

```python
import keras_whisper as keras_hub

backbone = keras_hub.models.WhisperBackbone.from_preset("whisper_tiny_en")
model = keras_hub.models.Backbone.from_preset("whisper_base_multi")
```
"""

from keras_whisper.audio import WhisperAudioConverter
from keras_whisper.backbone import Backbone, WhisperBackbone
from keras_whisper.speech_to_text import WhisperSpeechToText
from keras_whisper.tokenizer import WhisperTokenizer

__all__ = [
    "Backbone",
    "WhisperAudioConverter",
    "WhisperBackbone",
    "WhisperSpeechToText",
    "WhisperTokenizer",
]
