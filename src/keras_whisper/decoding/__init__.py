"""Decoding 30-second windows: options, OpenAI's logit rules and the cached decode loop.

- `DecodingOptions`, `DecodingResult`: openai-whisper's options and results.
- `generate(backbone, tokenizer, features, options)`: greedy, sampling and beam
  search over `WhisperBackbone.decode_with_cache`, compiled once per shape on JAX.
- `detect_language(backbone, tokenizer, features)`: language tokens and probabilities.
- `encode(backbone, features)`: the encoder output, which both accept in place of features.
- `filters`: the logit rules as vectorised `keras.ops` functions.
"""

from keras_whisper.decoding import filters
from keras_whisper.decoding.generate import compression_ratio, detect_language, encode, generate
from keras_whisper.decoding.options import DecodingOptions, DecodingResult

__all__ = [
    "DecodingOptions",
    "DecodingResult",
    "compression_ratio",
    "detect_language",
    "encode",
    "filters",
    "generate",
]
