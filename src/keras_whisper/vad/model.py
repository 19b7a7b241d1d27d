"""Silero VAD v6 (16 kHz) as a Keras 3 layer.

The network (silero-vad's `VADRNNJIT`, 16 kHz branch) reads windows of 576 samples: 64 samples
of context (the end of the previous 512-sample chunk, zeros before the first) followed by one
chunk of 512 samples (32 ms). Per window:

1. reflect-pad 64 samples on the right (640 samples) and take a magnitude STFT with the stored
   basis (a periodic-Hann-windowed DFT): 4 frames of 256 samples, hop 128, 129 bins;
2. four convolutions with ReLU (kernel 3, padding 1, strides 1, 2, 2, 1): `(4, 129)` to `(1, 128)`;
3. one LSTM cell step (hidden size 128), its state carried from chunk to chunk;
4. ReLU, a 1x1 convolution and a sigmoid: the speech probability of the chunk.

Only step 3 is sequential. `SileroVAD.call` therefore runs steps 1-2 and the LSTM's input
projection on every window of every waveform at once, then one `keras.ops.scan` over the chunks
for the recurrence, then step 4 on all chunks at once. `SileroVAD.speech_probabilities` feeds
whole files through it in blocks of 256 chunks (8.2 s, short audio) or 1024 chunks (32.8 s), each
block one compiled call on JAX (`jax.jit`), with the LSTM state carried between blocks.

The chunking is silero-vad's own (`get_speech_timestamps`, `OnnxWrapper.audio_forward`): the
waveform is zero-padded at the end to a multiple of 512 samples, so a waveform of `n` samples
gets `ceil(n / 512)` probabilities, and the model state starts at zero for every waveform.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_whisper.vad.constants import (
    CHUNK_SAMPLES,
    CONTEXT_SAMPLES,
    HIDDEN_SIZE,
    SAMPLE_RATE,
    WINDOW_SAMPLES,
)
from keras_whisper.vad.weights import load_weights_file, package_weights_path

_FFT_SIZE = 256
_HOP = 128
_BINS = _FFT_SIZE // 2 + 1  # 129
_CONVS = ((129, 128, 1), (128, 64, 2), (64, 64, 2), (64, 128, 1))  # (in, out, stride)
# Chunks per compiled call: 256 (8.2 s) for short audio, else blocks of 1024 (32.8 s) with the
# state carried between them. Two shapes per batch size, so at most two compilations.
_MIN_BLOCK_CHUNKS = 256
_MAX_BLOCK_CHUNKS = 1024


@keras.saving.register_keras_serializable(package="keras_whisper")
class SileroVAD(keras.layers.Layer):
    """Silero VAD v6, the 16 kHz voice activity detector, as a Keras layer.

    `call` maps windows of samples to speech probabilities and carries the LSTM state; the
    host-side `speech_probabilities` does silero-vad's chunking of whole waveforms. Weights come
    from the `silero-vad` PyPI package (`from_package`, the `vad` extra of keras-whisper) or a
    weight file (`from_file`); the constructor alone builds random weights.

    The layer computes in float32 whatever the global dtype policy.

    Args:
        **kwargs: other keyword arguments of `keras.layers.Layer` (`name`, `trainable`).

    Call arguments:
        windows: float tensor `(batch, chunks, 576)`: each window is 64 samples of context
            followed by one chunk of 512 samples at 16 kHz (see `frame_windows`).
        state: optional float tensor `(2, batch, 128)`, the LSTM's `(h, c)` after the previous
            chunk. `None` (zeros) starts a waveform.

    Returns:
        `(probabilities, state)`: `(batch, chunks)` speech probabilities in [0, 1] and the
        state after the last chunk, `(2, batch, 128)`.

    Examples:
    ```python
    vad = keras_whisper.vad.SileroVAD.from_package()
    audio = keras_whisper.audio.load_audio("speech.wav")  # 16 kHz mono float32
    probs = vad.speech_probabilities(audio)  # (ceil(len(audio) / 512),)

    # The layer itself, on windows made by `frame_windows`:
    windows = keras_whisper.vad.frame_windows(audio)[None]  # (1, chunks, 576)
    probs, state = vad(windows)
    ```
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("name", "silero_vad")
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self._compiled: dict[Any, Any] = {}
        self.weights_source: str | None = None

    # -----------------------------------------------------------------------------------------
    # Construction and weights
    # -----------------------------------------------------------------------------------------

    @classmethod
    def from_package(cls, package: str = "silero-vad", **kwargs) -> SileroVAD:
        """Builds the detector with the weights shipped in an installed PyPI package.

        The package's weight file is found through `importlib.metadata` and read as a file:
        neither the package nor PyTorch is imported.

        Args:
            package: str. `"silero-vad"` (default; the `vad` extra, the model of silero-vad's
                own `load_silero_vad()`) or `"faster-whisper"` (the Silero VAD v6.0 network
                that faster-whisper ships and runs).
            **kwargs: other keyword arguments of the constructor.

        Returns:
            A built `SileroVAD`.

        Raises:
            MissingVADWeightsError: the package is not installed; the message says
                `pip install 'keras-whisper[vad]'`.

        Examples:
        ```python
        vad = keras_whisper.vad.SileroVAD.from_package()
        same_as_faster_whisper = keras_whisper.vad.SileroVAD.from_package("faster-whisper")
        ```
        """
        return cls.from_file(package_weights_path(package), **kwargs)

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs) -> SileroVAD:
        """Builds the detector from a Silero VAD weight file.

        Args:
            path: str or PathLike. An ONNX export of the 16 kHz network (silero-vad's
                `silero_vad_16k_op15.onnx` or `silero_vad_16k_sequence.onnx`,
                faster-whisper's `silero_vad_v6.onnx`) or a safetensors file named like
                silero-vad's `silero_vad_16k.safetensors`.
            **kwargs: other keyword arguments of the constructor.

        Returns:
            A built `SileroVAD`.
        """
        vad = cls(**kwargs)
        vad.set_canonical_weights(load_weights_file(path))
        vad.weights_source = str(path)
        return vad

    def build(self, input_shape=None):
        if self.built:
            return

        def weight(name, shape, initializer="glorot_uniform"):
            return self.add_weight(name=name, shape=shape, initializer=initializer)

        self.stft_kernel = weight("stft_kernel", (_FFT_SIZE, 2 * _BINS))
        self.conv_kernels, self.conv_biases = [], []
        for index, (channels_in, channels_out, _) in enumerate(_CONVS, start=1):
            self.conv_kernels.append(weight(f"conv{index}_kernel", (3, channels_in, channels_out)))
            self.conv_biases.append(weight(f"conv{index}_bias", (channels_out,), "zeros"))
        self.lstm_input_kernel = weight("lstm_input_kernel", (HIDDEN_SIZE, 4 * HIDDEN_SIZE))
        self.lstm_recurrent_kernel = weight(
            "lstm_recurrent_kernel", (HIDDEN_SIZE, 4 * HIDDEN_SIZE), "orthogonal"
        )
        self.lstm_bias = weight("lstm_bias", (4 * HIDDEN_SIZE,), "zeros")
        self.output_kernel = weight("output_kernel", (HIDDEN_SIZE, 1))
        self.output_bias = weight("output_bias", (1,), "zeros")
        self.built = True

    def set_canonical_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Assigns weights in the canonical PyTorch layout of `keras_whisper.vad.weights`.

        Args:
            weights: dict of the 15 canonical arrays (`stft_conv.weight`, `conv1.weight`, ...,
                `lstm_cell.weight_ih`, ..., `final_conv.bias`), as returned by
                `keras_whisper.vad.weights.load_weights_file`.
        """
        self.build()
        self.stft_kernel.assign(weights["stft_conv.weight"][:, 0, :].T)
        for index, (kernel, bias) in enumerate(
            zip(self.conv_kernels, self.conv_biases, strict=True), start=1
        ):
            kernel.assign(np.transpose(weights[f"conv{index}.weight"], (2, 1, 0)))
            bias.assign(weights[f"conv{index}.bias"])
        self.lstm_input_kernel.assign(weights["lstm_cell.weight_ih"].T)
        self.lstm_recurrent_kernel.assign(weights["lstm_cell.weight_hh"].T)
        self.lstm_bias.assign(weights["lstm_cell.bias_ih"] + weights["lstm_cell.bias_hh"])
        self.output_kernel.assign(weights["final_conv.weight"][:, :, 0].T)
        self.output_bias.assign(weights["final_conv.bias"])

    # -----------------------------------------------------------------------------------------
    # The network
    # -----------------------------------------------------------------------------------------

    def encode(self, windows):
        """The convolutional front end and the LSTM's input projection of each window.

        Args:
            windows: float tensor `(..., 576)`.

        Returns:
            float tensor `(..., 512)`: `features @ W_ih + b_ih + b_hh` of each window, the
            non-recurrent half of the LSTM's gate pre-activations.
        """
        windows = ops.cast(windows, "float32")
        leading = ops.shape(windows)[:-1]
        x = ops.reshape(windows, (-1, WINDOW_SAMPLES))
        # Reflect padding of 64 samples on the right: x[574], x[573], ..., x[511].
        tail = ops.flip(x[:, WINDOW_SAMPLES - CONTEXT_SAMPLES - 1 : WINDOW_SAMPLES - 1], axis=1)
        x = ops.concatenate([x, tail], axis=1)  # (n, 640)
        # Four frames of 256 samples, hop 128: halves of consecutive 128-sample blocks.
        blocks = ops.reshape(x, (-1, 5, _HOP))
        frames = ops.concatenate([blocks[:, :-1], blocks[:, 1:]], axis=-1)  # (n, 4, 256)
        spectrum = ops.matmul(frames, self.stft_kernel)  # (n, 4, 258)
        real, imag = spectrum[..., :_BINS], spectrum[..., _BINS:]
        x = ops.sqrt(real * real + imag * imag)  # (n, 4, 129)
        for kernel, bias, (channels_in, channels_out, stride) in zip(
            self.conv_kernels, self.conv_biases, _CONVS, strict=True
        ):
            # Kernel 3, padding 1: one matmul over the three taps side by side (the time axis
            # is only 4, 2 or 1 long, where a general convolution is slower on CPU).
            steps = x.shape[1]
            zeros = ops.zeros_like(x[:, :1])
            padded = ops.concatenate([zeros, x, zeros], axis=1)
            outputs = (steps - 1) // stride + 1
            taps = [padded[:, j : j + stride * (outputs - 1) + 1 : stride] for j in range(3)]
            kernel = ops.reshape(kernel, (3 * channels_in, channels_out))
            x = ops.relu(ops.matmul(ops.concatenate(taps, axis=-1), kernel) + bias)
        features = x[:, 0, :]  # (n, 128): the time axis is 4 -> 4 -> 2 -> 1 -> 1
        gates = ops.matmul(features, self.lstm_input_kernel) + self.lstm_bias
        return ops.reshape(gates, tuple(leading) + (4 * HIDDEN_SIZE,))

    def call(self, windows, state=None):
        input_gates = self.encode(windows)  # (batch, chunks, 512)
        batch = ops.shape(input_gates)[0]
        if state is None:
            state = ops.zeros((2, batch, HIDDEN_SIZE), "float32")
        state = ops.cast(state, "float32")
        recurrent_kernel = ops.convert_to_tensor(self.lstm_recurrent_kernel)

        def step(carry, gates_x):
            # PyTorch's gate order i, f, g, o. One sigmoid over all four gates (g's is unused)
            # keeps the op count per step low: eager backends (torch) pay per op.
            h, c = carry
            gates = gates_x + ops.matmul(h, recurrent_kernel)
            sigmoids = ops.sigmoid(gates)
            i, f = sigmoids[:, :HIDDEN_SIZE], sigmoids[:, HIDDEN_SIZE : 2 * HIDDEN_SIZE]
            g = ops.tanh(gates[:, 2 * HIDDEN_SIZE : 3 * HIDDEN_SIZE])
            c = f * c + i * g
            h = sigmoids[:, 3 * HIDDEN_SIZE :] * ops.tanh(c)
            return (h, c), h

        (h, c), hidden = ops.scan(
            step, (state[0], state[1]), ops.transpose(input_gates, (1, 0, 2))
        )  # hidden: (chunks, batch, 128)
        logits = ops.matmul(ops.relu(hidden), self.output_kernel) + self.output_bias
        probabilities = ops.transpose(ops.sigmoid(logits[..., 0]), (1, 0))
        return probabilities, ops.stack([h, c])

    def compute_output_spec(self, windows, state=None):
        batch, chunks = windows.shape[0], windows.shape[1]
        return (
            keras.KerasTensor((batch, chunks), "float32"),
            keras.KerasTensor((2, batch, HIDDEN_SIZE), "float32"),
        )

    # -----------------------------------------------------------------------------------------
    # Whole waveforms
    # -----------------------------------------------------------------------------------------

    def speech_probabilities(
        self,
        audio: Any,
        sampling_rate: int = SAMPLE_RATE,
        max_block_chunks: int = _MAX_BLOCK_CHUNKS,
    ) -> np.ndarray | list[np.ndarray]:
        """Speech probabilities of every 32-ms chunk of one or more waveforms.

        Matches silero-vad's `get_speech_timestamps` loop (and `OnnxWrapper.audio_forward`):
        the state starts at zero, each chunk of 512 samples is seen with the last 64 samples
        of the previous chunk, and the last chunk is zero-padded.

        Args:
            audio: one waveform (a 1-D array of 16 kHz samples, or anything
                `keras_whisper.audio.load_audio` reads: a path, bytes, a file object), a 2-D
                array `(batch, samples)`, or a list of waveforms of any lengths. A batch runs
                in one pass, each waveform with its own state.
            sampling_rate: int. Must be 16000 (resample first with
                `keras_whisper.audio.resample`).
            max_block_chunks: int. Chunks per compiled call for audio longer than 256 chunks
                (8.2 s); bounds memory (about 20 MB per 1024 chunks and waveform).

        Returns:
            For one waveform, a float32 array `(ceil(samples / 512),)`; for a 2-D array, a
            `(batch, chunks)` array; for a list, a list of 1-D arrays.

        Examples:
        ```python
        vad = keras_whisper.vad.SileroVAD.from_package()
        probs = vad.speech_probabilities("speech.wav")
        speech = probs > 0.5  # one flag per 32 ms
        ```
        """
        if sampling_rate != SAMPLE_RATE:
            raise ValueError(
                f"Silero VAD here runs at {SAMPLE_RATE} Hz, got sampling_rate={sampling_rate}: "
                "resample with keras_whisper.audio.resample(audio, rate, 16000) first."
            )
        waveforms, kind = _as_waveforms(audio)
        lengths = [math.ceil(len(w) / CHUNK_SAMPLES) for w in waveforms]
        total = max(lengths, default=0)
        if total == 0:
            empty = [np.zeros((0,), np.float32) for _ in waveforms]
            return _pack(empty, kind, lengths)
        padded = np.zeros((len(waveforms), CONTEXT_SAMPLES + total * CHUNK_SAMPLES), np.float32)
        for row, waveform in enumerate(waveforms):
            padded[row, CONTEXT_SAMPLES : CONTEXT_SAMPLES + len(waveform)] = waveform
        windows = np.lib.stride_tricks.sliding_window_view(padded, WINDOW_SAMPLES, axis=1)
        windows = windows[:, ::CHUNK_SAMPLES]  # (batch, total, 576), a view
        block = _block_size(total, max_block_chunks)
        state = np.zeros((2, len(waveforms), HIDDEN_SIZE), np.float32)
        outputs = []
        for start in range(0, total, block):
            part = windows[:, start : start + block]
            if part.shape[1] < block:  # the last block: zero windows after the end
                part = np.concatenate(
                    [part, np.zeros((part.shape[0], block - part.shape[1], WINDOW_SAMPLES))],
                    axis=1,
                )
            probabilities, state = self._run_block(np.ascontiguousarray(part, np.float32), state)
            outputs.append(probabilities)
        probabilities = np.concatenate(outputs, axis=1)
        return _pack([probabilities[row, :n] for row, n in enumerate(lengths)], kind, lengths)

    def stream_speech_probabilities(
        self, blocks: Iterable[Any], max_block_chunks: int = _MAX_BLOCK_CHUNKS
    ) -> np.ndarray:
        """Speech probabilities of one waveform handed over block by block.

        The same numbers as `speech_probabilities(np.concatenate(blocks))`, bit for bit: the
        samples are regrouped into the same compiled calls (256 chunks for audio up to 8.2 s,
        else `max_block_chunks`), each window keeps the 64 samples of context before it, and
        the LSTM state is carried from call to call. Only one call's worth of samples is held
        at a time (about 2 MB for 1024 chunks), whatever the length of the waveform, so a file
        of many hours streams through (`keras_whisper.audio.stream_audio`) while only its
        probabilities (0.5 MB per hour) are kept.

        Args:
            blocks: an iterable of 1-D float arrays of 16 kHz samples, of any lengths (empty
                ones are skipped); one waveform cut anywhere.
            max_block_chunks: int. Chunks per compiled call for audio longer than 256 chunks,
                as in `speech_probabilities`.

        Returns:
            A float32 array `(ceil(samples / 512),)`, `samples` being the total length of the
            blocks.

        Examples:
        ```python
        vad = keras_whisper.vad.SileroVAD.from_package()
        blocks = keras_whisper.audio.stream_audio("ten_hours.flac", window_seconds=60)
        probs = vad.stream_speech_probabilities(blocks)  # one per 32 ms
        ```
        """
        _block_size(1, max_block_chunks)  # validates max_block_chunks
        blocks = iter(blocks)
        # The call size depends on whether the waveform is over 256 chunks: look that far ahead.
        head, count = [], 0
        for samples in blocks:
            head.append(_stream_block(samples))
            count += head[-1].size
            if count > _MIN_BLOCK_CHUNKS * CHUNK_SAMPLES:
                break
        if count == 0:
            return np.zeros((0,), np.float32)
        block = _block_size(math.ceil(count / CHUNK_SAMPLES), max_block_chunks)
        # `buffer` is one call's input: 64 samples of context, then `block` chunks.
        buffer = np.zeros(CONTEXT_SAMPLES + block * CHUNK_SAMPLES, np.float32)
        filled = CONTEXT_SAMPLES
        state = np.zeros((2, 1, HIDDEN_SIZE), np.float32)
        outputs = []

        def run(chunks: int):
            nonlocal state
            windows = np.lib.stride_tricks.sliding_window_view(buffer, WINDOW_SAMPLES)
            part = np.zeros((1, block, WINDOW_SAMPLES), np.float32)  # zero windows past the end
            part[0, :chunks] = windows[::CHUNK_SAMPLES][:chunks]
            probabilities, state = self._run_block(part, state)
            outputs.append(probabilities[0, :chunks])

        for samples in itertools.chain(head, (_stream_block(b) for b in blocks)):
            position = 0
            while position < samples.size:
                count = min(buffer.size - filled, samples.size - position)
                buffer[filled : filled + count] = samples[position : position + count]
                filled += count
                position += count
                if filled == buffer.size:
                    run(block)
                    buffer[:CONTEXT_SAMPLES] = buffer[-CONTEXT_SAMPLES:]
                    filled = CONTEXT_SAMPLES
        if filled > CONTEXT_SAMPLES:  # the last chunk is zero-padded
            buffer[filled:] = 0.0
            run(math.ceil((filled - CONTEXT_SAMPLES) / CHUNK_SAMPLES))
        return np.concatenate(outputs)

    def _run_block(self, windows: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One compiled call of the layer on host arrays; returns host arrays."""
        self.build()
        backend = keras.backend.backend()
        if backend == "jax":
            jitted = self._compiled.get("jax")
            if jitted is None:
                jitted = self._compiled["jax"] = _jit_stateless(weakref.ref(self))
            values = [v.value for v in self.variables]
            probabilities, state = jitted(values, windows, state)
        else:
            if backend == "torch":
                import torch

                context = torch.no_grad()
            else:
                context = contextlib.nullcontext()
            with context:
                probabilities, state = self(windows, state)
        return (
            np.asarray(ops.convert_to_numpy(probabilities), np.float32),
            np.asarray(ops.convert_to_numpy(state), np.float32),
        )


def _jit_stateless(layer_ref):
    import jax

    def stateless(values, windows, state):
        layer = layer_ref()
        mapping = list(zip(layer.variables, values, strict=True))
        # Full float32 matmuls: on GPUs JAX would otherwise use TF32 (10-bit mantissas), too
        # coarse for probabilities within 1e-3 of the reference. The model is small.
        with keras.StatelessScope(state_mapping=mapping), jax.default_matmul_precision("highest"):
            return layer.call(windows, state)

    # Kept on disk like the decoding stages: a new process loads it instead of compiling it
    # (0.8 s on a 2-core CPU).
    from keras_whisper.decoding.compilation_cache import CachedJit

    return CachedJit(stateless, "vad")


def _block_size(chunks: int, max_block_chunks: int) -> int:
    """The chunks of one compiled call: 256, or `max_block_chunks` for longer audio."""
    if max_block_chunks < 1:
        raise ValueError(f"`max_block_chunks` must be positive, got {max_block_chunks}.")
    size = _MIN_BLOCK_CHUNKS if chunks <= _MIN_BLOCK_CHUNKS else max_block_chunks
    return min(size, max_block_chunks)


def _stream_block(samples: Any) -> np.ndarray:
    block = np.asarray(samples, np.float32)
    if block.ndim != 1:
        raise ValueError(f"Blocks of samples must be 1-D, got shape {block.shape}.")
    return block


def frame_windows(audio: np.ndarray) -> np.ndarray:
    """silero-vad's windows of one 16 kHz waveform: `(ceil(samples / 512), 576)` float32.

    Window `i` is samples `[512 i - 64, 512 (i + 1))` of the waveform zero-padded at the end to
    a multiple of 512 samples, with zeros before the first sample.

    Args:
        audio: 1-D array of samples.

    Returns:
        A float32 array of windows, the input of `SileroVAD.call` (after adding a batch axis).
    """
    audio = np.asarray(audio, np.float32).reshape(-1)
    chunks = math.ceil(len(audio) / CHUNK_SAMPLES)
    padded = np.zeros(CONTEXT_SAMPLES + chunks * CHUNK_SAMPLES, np.float32)
    padded[CONTEXT_SAMPLES : CONTEXT_SAMPLES + len(audio)] = audio
    windows = np.lib.stride_tricks.sliding_window_view(padded, WINDOW_SAMPLES)[::CHUNK_SAMPLES]
    return np.ascontiguousarray(windows)


def _as_waveforms(audio: Any) -> tuple[list[np.ndarray], str]:
    """The waveforms of `speech_probabilities`' input and how to shape its output."""
    if isinstance(audio, (list, tuple)) and not (audio and np.isscalar(audio[0])):
        return [_one_waveform(a) for a in audio], "list"
    if isinstance(audio, np.ndarray) or _is_tensor(audio):
        array = np.asarray(ops.convert_to_numpy(audio) if _is_tensor(audio) else audio)
        if array.ndim == 2:
            return [_one_waveform(row) for row in array], "batch"
    return [_one_waveform(audio)], "single"


def _is_tensor(value: Any) -> bool:
    return not isinstance(value, np.ndarray) and hasattr(value, "shape") and hasattr(value, "dtype")


def _one_waveform(audio: Any) -> np.ndarray:
    if isinstance(audio, (list, tuple)):
        audio = np.asarray(audio, np.float32)
    if _is_tensor(audio):
        audio = np.asarray(ops.convert_to_numpy(audio))
    if isinstance(audio, np.ndarray):
        if audio.ndim != 1:
            raise ValueError(f"A waveform must be 1-D (mono samples), got shape {audio.shape}.")
        if audio.size == 0:
            return audio.astype(np.float32)
    from keras_whisper.audio import load_audio

    return load_audio(audio, SAMPLE_RATE)


def _pack(arrays: Sequence[np.ndarray], kind: str, lengths: Sequence[int]):
    if kind == "single":
        return arrays[0]
    if kind == "batch":
        width = max(lengths, default=0)
        return np.stack([a[:width] for a in arrays]) if arrays else np.zeros((0, 0), np.float32)
    return list(arrays)
