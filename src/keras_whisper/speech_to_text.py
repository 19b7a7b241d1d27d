"""`WhisperSpeechToText`: the speech-to-text task (backbone + audio + tokenizer)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from keras_whisper import alignment, preset_io
from keras_whisper.audio import WhisperAudioConverter, load_audio
from keras_whisper.backbone import WhisperBackbone
from keras_whisper.batched import transcribe_batched, transcribe_many, window_features
from keras_whisper.decoding import DecodingOptions, DecodingResult, generate
from keras_whisper.tokenizer import WhisperTokenizer
from keras_whisper.transcription import (
    TranscriptionResult,
    check_transcribe_options,
    transcribe,
    transcribe_segments,
)


class WhisperSpeechToText(keras.Model):
    """Whisper speech recognition and translation: audio in, text out.

    A keras-hub-style task: a `WhisperBackbone`, its `WhisperAudioConverter`
    and `WhisperTokenizer`. As a Keras model it maps the backbone's inputs to
    next-token logits through the tied embedding, so `compile()` + `fit()`
    fine-tune it with a sparse cross-entropy. `generate()` decodes 30-s
    windows with a KV-cached loop compiled once per shape; `transcribe()`
    handles audio of any length with OpenAI's seek loop.

    Args:
        backbone: a `WhisperBackbone`.
        tokenizer: a `WhisperTokenizer` (needed for `generate`/`transcribe`).
        audio_converter: a `WhisperAudioConverter`; defaults to one with the
            backbone's number of mel bins.
        alignment_heads: the `(layer, head)` pairs of the decoder's cross-attention
            that follow the speech, for `transcribe(word_timestamps=True)`;
            `from_preset` reads them from the preset (`None`: every head of the
            second half of the decoder's layers).

    Examples:
    ```python
    model = keras_whisper.WhisperSpeechToText.from_preset("whisper_tiny_en")
    result = model.transcribe("speech.wav")
    print(result.text)
    for segment in result.segments:
        print(segment.start, segment.end, segment.text)
    ```
    """

    def __init__(
        self,
        backbone: WhisperBackbone,
        tokenizer: WhisperTokenizer | None = None,
        audio_converter: WhisperAudioConverter | None = None,
        alignment_heads=None,
        **kwargs,
    ):
        inputs = backbone.input
        hidden = backbone(inputs)["decoder_sequence_output"]
        logits = backbone.token_embedding(hidden, reverse=True)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.audio_converter = audio_converter or WhisperAudioConverter(num_mels=backbone.num_mels)
        self.alignment_heads = None
        if alignment_heads is not None:
            self.alignment_heads = alignment.check_alignment_heads(
                alignment_heads, len(backbone.decoder_transformer_layers), backbone.num_heads
            )

    @classmethod
    def from_preset(cls, preset: str, load_weights: bool = True, **kwargs) -> WhisperSpeechToText:
        """Load the backbone, tokenizer and audio converter of a preset.

        Args:
            preset: a built-in name, a local directory (any supported
                checkpoint format), or an `hf://` / `kaggle://` handle.
            load_weights: load the weights (`True`) or initialise randomly.
            **kwargs: backbone config overrides, e.g. `dtype="bfloat16"`.
        """
        backbone = WhisperBackbone.from_preset(preset, load_weights=load_weights, **kwargs)
        tokenizer = WhisperTokenizer.from_preset(preset)
        audio_converter = WhisperAudioConverter.from_preset(preset)
        heads = alignment.read_alignment_heads(preset_io.preset_dir_for(preset))
        return cls(backbone, tokenizer, audio_converter, alignment_heads=heads)

    def save_to_preset(self, preset_dir, overwrite: bool = False) -> None:
        """Save backbone, tokenizer and audio converter as one preset directory."""
        self.backbone.save_to_preset(preset_dir, overwrite=overwrite)
        if self.tokenizer is not None:
            self.tokenizer.save_to_preset(preset_dir, overwrite=overwrite)
        self.audio_converter.save_to_preset(preset_dir, overwrite=overwrite)
        if self.alignment_heads is not None:
            alignment.write_alignment_heads(preset_dir, self.alignment_heads)

    def _require_tokenizer(self) -> WhisperTokenizer:
        if self.tokenizer is None:
            raise ValueError(
                "This WhisperSpeechToText has no tokenizer: build it with from_preset() or "
                "pass tokenizer= to decode text."
            )
        return self.tokenizer

    def generate(self, audio, **options: Any) -> list[DecodingResult]:
        """Decode 30-s windows: one waveform, a batch of them, or log-mel features.

        Args:
            audio: a path/bytes/array of 16 kHz audio (one window; of longer
                audio only the first 30 s are decoded: use `transcribe`), a list
                of them, or log-mel features: `(batch, 3000, num_mels)`, or one
                window's `(3000, num_mels)` (NumPy arrays or backend tensors, as
                `WhisperAudioConverter` returns them).
            **options: `DecodingOptions` fields (language, task, temperature,
                beam_size, best_of, patience, length_penalty, prompt, prefix,
                suppress_tokens, suppress_blank, without_timestamps,
                max_initial_timestamp, sample_len).

        Returns:
            One `DecodingResult` per window.
        """
        tokenizer = self._require_tokenizer()
        if keras.ops.is_tensor(audio) and not isinstance(audio, np.ndarray):
            audio = keras.ops.convert_to_numpy(audio)
        num_mels = self.backbone.num_mels
        if isinstance(audio, np.ndarray) and audio.ndim == 2 and audio.shape[-1] == num_mels:
            audio = audio[None]  # one window's features (audio has a few channels at most)
        if isinstance(audio, np.ndarray) and audio.ndim == 3:
            features = audio.astype("float32")
        else:
            items = audio if isinstance(audio, (list, tuple)) else [audio]
            if not items:
                return []
            features = np.stack([self.first_window(load_audio(item)) for item in items])
        return generate(self.backbone, tokenizer, features, DecodingOptions(**options))

    def first_window(self, waveform: np.ndarray) -> np.ndarray:
        """The features `transcribe()` decodes first: `(3000, num_mels)` float32.

        The log-mel of the whole recording (normalised over all of it), its
        first 30 s of frames, zero-padded after normalisation as in OpenAI's
        and faster-whisper's `transcribe`. (Padding the audio before the
        log-mel, as the converter's `__call__` does, gives slightly different
        features at the end of a short recording.)
        """
        return window_features(waveform, self.backbone.num_mels)

    def transcribe(
        self, audio, batch_size: int | None = None, **kwargs: Any
    ) -> TranscriptionResult:
        """Transcribe audio of any length.

        Args:
            audio: a path, bytes, file object or 16 kHz mono float array.
            batch_size: `None` (default) runs OpenAI's sequential seek loop
                (`transcription.transcribe_segments` has the arguments); an int
                runs the batched throughput mode: voice activity detection cuts
                the speech into pieces of at most 30 s, decoded `batch_size` at a
                time (`batched.transcribe_many` has the arguments). Files are then
                read in blocks: memory is bounded by `batch_size` x 30 s of audio,
                not by the length of the recording.
            **kwargs: the options of the chosen mode.

        Returns:
            A `TranscriptionResult`.

        Examples:
        ```python
        model = keras_whisper.WhisperSpeechToText.from_preset("whisper_tiny_en")
        result = model.transcribe("talk.mp3")  # sequential, OpenAI's transcribe()
        result = model.transcribe("ten_hours.flac", batch_size=16)  # throughput mode
        ```
        """
        tokenizer = self._require_tokenizer()
        kwargs.setdefault("alignment_heads", self.alignment_heads)
        if batch_size is not None:
            return transcribe_batched(
                self.backbone, tokenizer, audio, batch_size=batch_size, **kwargs
            )
        return transcribe(self.backbone, tokenizer, audio, **kwargs)

    def transcribe_many(self, inputs, batch_size: int = 8, **kwargs: Any):
        """Transcribe many inputs in batches; yields `(input, result or error)` in order.

        See `batched.transcribe_many` for the arguments. Memory is bounded by
        `batch_size`, not by the length of the files; an unreadable input is yielded
        with its `AudioError` while the others are transcribed.

        Examples:
        ```python
        for path, result in model.transcribe_many(paths, batch_size=16):
            print(path, result if isinstance(result, Exception) else result.text)
        ```
        """
        kwargs.setdefault("alignment_heads", self.alignment_heads)
        return transcribe_many(
            self.backbone, self._require_tokenizer(), inputs, batch_size=batch_size, **kwargs
        )

    def transcribe_segments(self, audio, **kwargs: Any):
        """Like `transcribe`, but returns `(segment generator, info)` to stream."""
        kwargs.setdefault("alignment_heads", self.alignment_heads)
        return transcribe_segments(self.backbone, self._require_tokenizer(), audio, **kwargs)

    def save(self, filepath, *args: Any, **kwargs: Any) -> None:
        """Refused: a `.keras` file cannot hold the tokenizer and audio front end.

        Use `save_to_preset(dir)`, which `from_preset(dir)` loads back whole
        (`model.backbone.save(path)` keeps the backbone alone; `save_weights` the
        weights).
        """
        raise NotImplementedError(
            f"WhisperSpeechToText does not save as a .keras file ({filepath}): it could not be "
            "loaded back with its tokenizer and audio front end. Use "
            "model.save_to_preset(folder) and WhisperSpeechToText.from_preset(folder); "
            "model.backbone.save(path) saves the backbone alone, and model.save_weights(path) "
            "the weights (in a checkpoint callback: save_weights_only=True)."
        )

    def check_transcribe_options(self, **kwargs: Any) -> None:
        """Raise the `ValueError` that `transcribe_segments(audio, **kwargs)` would raise
        for its options, without any audio: to refuse bad options once before many files.

        Examples:
        ```python
        model.check_transcribe_options(beam_size=5, language="de")  # passes or raises
        ```
        """
        kwargs.setdefault("alignment_heads", self.alignment_heads)
        check_transcribe_options(self.backbone, self._require_tokenizer(), **kwargs)
