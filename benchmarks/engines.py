"""The engines under test, one class each, driven by `worker.py` in their own process.

An engine imports its framework in `import_modules`, loads a model in `load`
and then answers two kinds of requests:

- `transcribe(audio, config)`: a whole file, end to end (e2e-capable engines);
- `setup_model_level()` once, then `encoder_seconds()` (one encoder forward on
  a 30-s window, batch 1) and `decoder_step_seconds()` (one KV-cached decoder
  step at batch 1: one new token at position `PROMPT_LENGTH` with
  `PROMPT_LENGTH` tokens and the cross-attention keys/values already cached,
  up to the vocabulary logits).

The model-level inputs are random log-mel features: the time of a forward pass
does not depend on the values. Every engine runs in float32.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from data import ModelSpec

THREADS = 2
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# Each engine seeds its own sampler before every transcription, so a window that falls back to
# temperature > 0 draws the same samples in every run (the engines' samples still differ).
SEED = 0
PROMPT_LENGTH = 32  # tokens in the decoder's self-attention cache before the timed step
STEP_TOKEN = 1000  # the token fed at the timed step (any text token)
N_FRAMES = 3000  # mel frames in a 30-s window


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    """An end-to-end decoding setup, the same for every engine.

    All setups decode English with timestamps, condition on the previous
    window's text and fall back through `TEMPERATURES` (OpenAI's defaults).
    """

    name: str
    beam_size: int | None  # None: greedy
    best_of: int  # samples per window when falling back to temperature > 0
    # Batched throughput mode (issue 8): Silero VAD pieces of <= 30 s decoded
    # `batch_size` at a time, no timestamps, no previous text, T = 0 only, against
    # faster-whisper's `BatchedInferencePipeline` with the same batch size.
    batch_size: int | None = None

    def describe(self) -> str:
        search = "greedy" if self.beam_size is None else f"beam {self.beam_size}"
        if self.batch_size:
            return (
                f"batched mode, batch {self.batch_size}, {search}, Silero VAD pieces <= 30 s "
                "(default options), no timestamps, no previous text, T = 0; engines without "
                "a batched mode are not run"
            )
        return f"{search}, best_of {self.best_of}, T fallback 0-1, timestamps, prev. text"


DECODE_CONFIGS = {
    "greedy": DecodeConfig("greedy", None, 1),
    "beam5": DecodeConfig("beam5", 5, 5),
    "batched8": DecodeConfig("batched8", None, 1, batch_size=8),
    "batched16": DecodeConfig("batched16", None, 1, batch_size=16),
}
# The engines with a batched mode (the others skip the `batch_size` setups).
BATCHED_ENGINES = ("kw-jax", "kw-jax-bf16", "kw-torch", "fw-fp32", "fw-int8")


def model_features(num_mels: int) -> np.ndarray:
    """Random log-mel-like features `(1, N_FRAMES, num_mels)` (frames first, Keras layout)."""
    rng = np.random.default_rng(0)
    return (rng.standard_normal((1, N_FRAMES, num_mels)) * 0.5).astype(np.float32)


def prompt_tokens(model: ModelSpec) -> list[int]:
    """The `PROMPT_LENGTH` tokens in the cache before the timed step."""
    return [model.sot] + [STEP_TOKEN + 1 + i for i in range(PROMPT_LENGTH - 1)]


def _seconds(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Engine:
    """Base class. Subclasses set `label` and `packages` and implement what they support."""

    label = ""
    # Distribution names whose versions the report lists for this engine.
    packages: tuple[str, ...] = ()
    # The Keras backend the worker process must select (None: not a Keras engine).
    keras_backend: str | None = None
    e2e = False  # can transcribe files

    def __init__(self, model: ModelSpec):
        self.model = model

    def import_modules(self) -> None:
        """Import the framework (timed separately for the cold-start section)."""

    def load(self) -> None:
        """Load the model for end-to-end transcription."""
        raise NotImplementedError(f"{self.label} does not transcribe files here.")

    def transcribe(self, audio: np.ndarray, config: DecodeConfig) -> str:
        """Transcribe a 16 kHz mono waveform; returns the text."""
        raise NotImplementedError(f"{self.label} does not transcribe files here.")

    def trace_counts(self) -> dict[str, int] | None:
        """Compilations so far per stage, where the engine compiles (else None)."""
        return None

    def setup_model_level(self) -> None:
        """Load the model and prepare the encoder input and a filled decoder cache."""
        raise NotImplementedError

    def encoder_seconds(self) -> float:
        """Seconds of one encoder forward pass on a 30-s window."""
        raise NotImplementedError

    def decoder_step_seconds(self) -> float:
        """Seconds of one cached decoder step (batch 1) up to the logits."""
        raise NotImplementedError


def _set_torch_threads() -> None:
    import torch

    torch.set_num_threads(THREADS)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set once in this process
        pass


# ---------------------------------------------------------------------------------------------
# keras-whisper
# ---------------------------------------------------------------------------------------------


def _compiled(
    model, fn: Callable, donate: tuple[int, ...] = (), stage: str | None = None
) -> Callable:
    """`fn(*args)` over a Keras model's variables, as the model's backend runs it fastest.

    On JAX: a stateless function of the variables under `jax.jit` (donating the
    arguments at positions `donate`, e.g. a KV cache that is replaced by the
    call's output), compiled with the XLA options keras-whisper gives its `stage`
    (`decoding.generate.compiler_options`). On PyTorch: eager, under `torch.no_grad()`.
    """
    import keras

    if keras.backend.backend() == "jax":
        import jax

        variables = list(model.variables)

        def stateless(state, *args):
            with keras.StatelessScope(state_mapping=list(zip(variables, state, strict=True))):
                return fn(*args)

        from keras_whisper.decoding.generate import compiler_options

        jitted = jax.jit(
            stateless,
            donate_argnums=tuple(i + 1 for i in donate),
            compiler_options=compiler_options(stage),
        )
        state = [v.value for v in variables]
        return lambda *args: jitted(state, *args)

    import torch

    def eager(*args):
        with torch.no_grad():
            return fn(*args)

    return eager


def _block(value: Any) -> Any:
    """Wait for an asynchronous (JAX) result; other backends compute synchronously."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.block_until_ready(value)
    return value


class KerasWhisperEngine(Engine):
    """keras-whisper: `WhisperSpeechToText.transcribe` and the backbone's generation API."""

    e2e = True

    def __init__(
        self, model: ModelSpec, backend: str, disk_cache: bool = True, dtype: str | None = None
    ):
        super().__init__(model)
        self.keras_backend = backend
        self.disk_cache = disk_cache
        self.dtype = dtype
        self.label = f"keras-whisper ({'JAX' if backend == 'jax' else 'PyTorch'})"
        if dtype:
            self.label = self.label[:-1] + f", {dtype})"
        if not disk_cache:
            self.label += ", compiling (no compilation cache)"
        self.packages = ("keras", "jax", "jaxlib") if backend == "jax" else ("keras", "torch")

    def import_modules(self) -> None:
        if not self.disk_cache:
            # Every stage compiles, as in the first process on a machine.
            os.environ["KERAS_WHISPER_COMPILATION_CACHE"] = "0"
        import keras_whisper

        keras_whisper.WhisperSpeechToText  # noqa: B018 (imports Keras and the backend)
        if self.keras_backend == "torch":
            _set_torch_threads()

    def load(self) -> None:
        import keras_whisper

        self.task = keras_whisper.WhisperSpeechToText.from_preset(
            self.model.preset, dtype=self.dtype
        )

    def transcribe(self, audio: np.ndarray, config: DecodeConfig) -> str:
        if config.batch_size:
            return self.task.transcribe(
                audio, language="en", batch_size=config.batch_size, without_timestamps=True
            ).text
        result = self.task.transcribe(
            audio,
            language="en",
            temperature=TEMPERATURES,
            beam_size=config.beam_size,
            best_of=config.best_of,
            without_timestamps=False,
            condition_on_previous_text=True,
            seed=SEED,
        )
        return result.text

    def trace_counts(self) -> dict[str, int] | None:
        if self.keras_backend != "jax":
            return None
        from keras_whisper.decoding.generate import TRACE_COUNTS

        return dict(TRACE_COUNTS)

    def setup_model_level(self) -> None:
        import keras

        from keras_whisper import WhisperBackbone

        backbone = WhisperBackbone.from_preset(self.model.preset, dtype=self.dtype)
        self.backbone = backbone

        def step(token, cache, cross, index):
            hidden, cache = backbone.decode_with_cache(token, cache, cross, index)
            return backbone.logits(hidden[:, 0]), cache

        self._encode = _compiled(backbone, backbone.encode, stage="encode")
        self._step = _compiled(backbone, step, donate=(1,))
        cross_fn = _compiled(backbone, backbone.cross_attention_cache)
        prefill = _compiled(backbone, lambda t, c, x: backbone.decode_with_cache(t, c, x, 0))

        ops = keras.ops
        self._features = ops.convert_to_tensor(model_features(backbone.num_mels))
        self._cross = _block(cross_fn(self._encode(self._features)))
        prompt = ops.convert_to_tensor(np.array([prompt_tokens(self.model)], np.int32))
        _, cache = prefill(prompt, backbone.empty_self_attention_cache(1), self._cross)
        self._cache = _block(cache)
        self._token = ops.convert_to_tensor(np.array([[STEP_TOKEN]], np.int32))
        self._index = ops.convert_to_tensor(np.int32(PROMPT_LENGTH))

    def encoder_seconds(self) -> float:
        return _seconds(lambda: _block(self._encode(self._features)))

    def decoder_step_seconds(self) -> float:
        start = time.perf_counter()
        logits, self._cache = self._step(self._token, self._cache, self._cross, self._index)
        _block(logits)
        return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# faster-whisper / CTranslate2
# ---------------------------------------------------------------------------------------------


class FasterWhisperEngine(Engine):
    """faster-whisper's `WhisperModel` on CTranslate2, from the preset's own model.bin.

    At model level it times the underlying `ctranslate2.models.Whisper`. Its
    Python API has no single decoder step, so a step is the difference of two
    `generate()` calls on the same cached encoder output, divided by the
    difference in generated tokens (greedy, end-of-text suppressed, no
    timestamps).
    """

    e2e = True
    packages = ("faster-whisper", "ctranslate2")

    def __init__(self, model: ModelSpec, compute_type: str):
        super().__init__(model)
        self.compute_type = compute_type
        self.label = f"faster-whisper ({compute_type})"

    def import_modules(self) -> None:
        import faster_whisper  # noqa: F401

    def load(self) -> None:
        from faster_whisper import WhisperModel

        self.whisper = WhisperModel(
            str(self.model.ct2_dir()),
            device="cpu",
            compute_type=self.compute_type,
            cpu_threads=THREADS,
            num_workers=1,
        )

    def transcribe(self, audio: np.ndarray, config: DecodeConfig) -> str:
        if config.batch_size:
            from faster_whisper import BatchedInferencePipeline

            if getattr(self, "pipeline", None) is None:
                self.pipeline = BatchedInferencePipeline(self.whisper)
            segments, _ = self.pipeline.transcribe(
                audio,
                language="en",
                task="transcribe",
                batch_size=config.batch_size,
                beam_size=1,
                best_of=1,
                temperature=0.0,
                without_timestamps=True,
                vad_filter=True,
            )
            return "".join(segment.text for segment in segments).strip()
        import ctranslate2

        ctranslate2.set_random_seed(SEED)
        segments, _ = self.whisper.transcribe(
            audio,
            language="en",
            task="transcribe",
            beam_size=config.beam_size or 1,
            best_of=config.best_of,
            patience=1,
            temperature=list(TEMPERATURES),
            condition_on_previous_text=True,
            without_timestamps=False,
            word_timestamps=False,
            vad_filter=False,
        )
        return "".join(segment.text for segment in segments).strip()

    def setup_model_level(self) -> None:
        import ctranslate2

        self.load()
        self.label = f"CTranslate2 ({self.compute_type})"
        self._ct2 = self.whisper.model
        features = np.ascontiguousarray(
            model_features(self.model.config["num_mels"]).transpose(0, 2, 1)
        )
        self._features = ctranslate2.StorageView.from_array(features)
        self._encoded = self._ct2.encode(self._features)
        # <|startofprev|> + previous text + <|startoftranscript|> <|notimestamps|>: all
        # prompt, so every generated token is one decoder step.
        model = self.model
        text = prompt_tokens(model)[1:-1]
        self._prompt = [model.startofprev, *text, model.sot, model.notimestamps]

    def encoder_seconds(self) -> float:
        return _seconds(lambda: self._ct2.encode(self._features))

    def _generate(self, new_tokens: int) -> tuple[float, int]:
        start = time.perf_counter()
        result = self._ct2.generate(
            self._encoded,
            [self._prompt],
            beam_size=1,
            max_length=len(self._prompt) + new_tokens,
            suppress_blank=False,
            suppress_tokens=[-1, self.model.eot],
        )
        return time.perf_counter() - start, len(result[0].sequences_ids[0])

    def decoder_step_seconds(self) -> float:
        short_time, short_count = self._generate(4)
        long_time, long_count = self._generate(36)
        return (long_time - short_time) / max(long_count - short_count, 1)


# ---------------------------------------------------------------------------------------------
# openai-whisper
# ---------------------------------------------------------------------------------------------


class OpenAIWhisperEngine(Engine):
    """openai-whisper (PyTorch, CPU) running our weights exported to its `.pt` format."""

    e2e = True
    label = "openai-whisper"
    packages = ("openai-whisper", "torch")

    def import_modules(self) -> None:
        import whisper  # noqa: F401

        _set_torch_threads()

    def load(self) -> None:
        import whisper

        self.whisper = whisper.load_model(str(self.model.openai_checkpoint()), device="cpu")

    def transcribe(self, audio: np.ndarray, config: DecodeConfig) -> str:
        import torch
        import whisper

        torch.manual_seed(SEED)
        result = whisper.transcribe(
            self.whisper,
            audio,
            verbose=None,
            language="en",
            temperature=TEMPERATURES,
            beam_size=config.beam_size,
            best_of=config.best_of,
            condition_on_previous_text=True,
            without_timestamps=False,
            fp16=False,
        )
        return result["text"].strip()

    def setup_model_level(self) -> None:
        import torch

        self.load()
        features = model_features(self.whisper.dims.n_mels).transpose(0, 2, 1)
        self._mel = torch.from_numpy(np.ascontiguousarray(features))
        with torch.no_grad():
            self._audio_features = self.whisper.encoder(self._mel)
            # openai-whisper's KV cache: forward hooks that append each step's keys and
            # values (cross-attention ones are computed once and reused).
            self._cache, self._hooks = self.whisper.install_kv_cache_hooks()
            prompt = torch.tensor([prompt_tokens(self.model)])
            self.whisper.decoder(prompt, self._audio_features, kv_cache=self._cache)
        self._filled = dict(self._cache)
        self._token = torch.tensor([[STEP_TOKEN]])

    def encoder_seconds(self) -> float:
        import torch

        with torch.no_grad():
            return _seconds(lambda: self.whisper.encoder(self._mel))

    def decoder_step_seconds(self) -> float:
        import torch

        with torch.no_grad():
            seconds = _seconds(
                lambda: self.whisper.decoder(
                    self._token, self._audio_features, kv_cache=self._cache
                )
            )
        # The hooks replaced the cached tensors by longer ones: back to PROMPT_LENGTH.
        self._cache.clear()
        self._cache.update(self._filled)
        return seconds


# ---------------------------------------------------------------------------------------------
# whisper.cpp
# ---------------------------------------------------------------------------------------------


class WhisperCppEngine(Engine):
    """whisper.cpp (C/C++, ggml; through pywhispercpp) on our weights exported to GGML.

    Its own decoding rules: greedy with `best_of` samples on fallback or beam search,
    temperature steps of 0.2, its entropy threshold in place of the compression ratio,
    conditioned on the previous text, timestamps on.
    """

    e2e = True
    packages = ("pywhispercpp",)

    def __init__(self, model: ModelSpec, dtype: str):
        super().__init__(model)
        self.dtype = dtype
        self.label = f"whisper.cpp ({dtype})"

    def import_modules(self) -> None:
        import pywhispercpp.model  # noqa: F401

    def load(self) -> None:
        from pywhispercpp.model import Model

        self.whisper = Model(
            str(self.model.ggml_file(self.dtype)),
            n_threads=THREADS,
            print_progress=False,
            print_realtime=False,
            redirect_whispercpp_logs_to=None,
        )

    def transcribe(self, audio: np.ndarray, config: DecodeConfig) -> str:
        import _pywhispercpp

        strategies = _pywhispercpp.whisper_sampling_strategy
        beam = config.beam_size is not None
        # pywhispercpp fixes the strategy when the model is made; its parameters hold it
        self.whisper._params.strategy = (
            strategies.WHISPER_SAMPLING_BEAM_SEARCH if beam else strategies.WHISPER_SAMPLING_GREEDY
        )
        segments = self.whisper.transcribe(
            audio,
            language="en",
            translate=False,
            no_context=False,
            no_timestamps=False,
            temperature=0.0,
            temperature_inc=TEMPERATURES[1] - TEMPERATURES[0],
            greedy={"best_of": config.best_of},
            beam_search={"beam_size": config.beam_size or 1, "patience": -1.0},
        )
        return " ".join(segment.text.strip() for segment in segments).strip()


# ---------------------------------------------------------------------------------------------
# transformers
# ---------------------------------------------------------------------------------------------


class TransformersEngine(Engine):
    """transformers' `WhisperForConditionalGeneration` (PyTorch, sdpa) on our exported weights."""

    label = "transformers"
    packages = ("transformers", "torch")

    def import_modules(self) -> None:
        import transformers  # noqa: F401

        _set_torch_threads()

    def setup_model_level(self) -> None:
        import torch
        from transformers import WhisperForConditionalGeneration

        self.hf = WhisperForConditionalGeneration.from_pretrained(
            str(self.model.transformers_dir()), dtype=torch.float32
        ).eval()
        features = model_features(self.hf.config.num_mel_bins).transpose(0, 2, 1)
        self._mel = torch.from_numpy(np.ascontiguousarray(features))
        with torch.no_grad():
            self._encoded = (self._encode(),)
            out = self.hf(
                encoder_outputs=self._encoded,
                decoder_input_ids=torch.tensor([prompt_tokens(self.model)]),
                use_cache=True,
            )
        self._past = out.past_key_values
        self._token = torch.tensor([[STEP_TOKEN]])

    def _encode(self):
        return self.hf.model.encoder(input_features=self._mel).last_hidden_state

    def encoder_seconds(self) -> float:
        import torch

        with torch.no_grad():
            return _seconds(self._encode)

    def decoder_step_seconds(self) -> float:
        import torch

        with torch.no_grad():
            seconds = _seconds(
                lambda: self.hf(
                    encoder_outputs=self._encoded,
                    decoder_input_ids=self._token,
                    past_key_values=self._past,
                    use_cache=True,
                )
            )
        # Drop the step's keys and values again (a negative crop removes that many tokens).
        self._past.crop(PROMPT_LENGTH - self._past.get_seq_length())
        return seconds


# ---------------------------------------------------------------------------------------------
# keras-hub
# ---------------------------------------------------------------------------------------------


class KerasHubEngine(Engine):
    """keras-hub's `WhisperBackbone` (JAX or PyTorch), random weights of the same architecture.

    keras-hub has no Whisper generation API; the step uses its decoder layers'
    own cache arguments (`self_attention_cache` / `cross_attention_cache`, as
    its seq2seq models do), jitted like keras-whisper's on JAX, eager under
    `no_grad` on PyTorch.
    """

    def __init__(self, model: ModelSpec, backend: str = "jax"):
        super().__init__(model)
        self.keras_backend = backend
        name = "JAX" if backend == "jax" else "PyTorch"
        self.label = f"keras-hub ({name}, random weights)"
        self.packages = ("keras-hub", "keras", "jax" if backend == "jax" else "torch")

    def import_modules(self) -> None:
        import keras_hub  # noqa: F401

        if self.keras_backend == "torch":
            _set_torch_threads()

    def setup_model_level(self) -> None:
        import keras
        import keras_hub

        config = self.model.config
        names = (
            "vocabulary_size",
            "num_layers",
            "num_heads",
            "hidden_dim",
            "intermediate_dim",
            "num_mels",
            "max_encoder_sequence_length",
            "max_decoder_sequence_length",
        )
        backbone = keras_hub.models.WhisperBackbone(**{name: config[name] for name in names})
        encoder = keras.Model(
            backbone.input["encoder_features"], backbone.output["encoder_sequence_output"]
        )
        layers = backbone.decoder_transformer_layers
        ops = keras.ops
        heads, head_dim = backbone.num_heads, backbone.hidden_dim // backbone.num_heads

        def decode(tokens, self_caches, cross_caches, encoded, index, cross_index):
            x = backbone.decoder_embeddings(tokens, start_index=index)
            new_self, new_cross = [], []
            for i, layer in enumerate(layers):
                x, self_cache, cross_cache = layer(
                    decoder_sequence=x,
                    encoder_sequence=encoded,
                    self_attention_cache=self_caches[i],
                    self_attention_cache_update_index=index,
                    cross_attention_cache=cross_caches[i],
                    cross_attention_cache_update_index=cross_index,
                )
                new_self.append(self_cache)
                new_cross.append(cross_cache)
            logits = backbone.token_embedding(backbone.decoder_layer_norm(x)[:, -1], reverse=True)
            return logits, ops.stack(new_self), ops.stack(new_cross)

        self._encode = _compiled(encoder, encoder)
        self._features = ops.convert_to_tensor(model_features(backbone.num_mels))
        self._encoded = _block(self._encode(self._features))
        # Prefill: the prompt fills the self-attention cache and computes the cross one.
        prefill = _compiled(backbone, lambda t, s, c, e: decode(t, s, c, e, 0, 0))
        shape = (len(layers), 1, 2)
        self_caches = ops.zeros(shape + (config["max_decoder_sequence_length"], heads, head_dim))
        cross_caches = ops.zeros(
            shape + (config["max_encoder_sequence_length"] // 2, heads, head_dim)
        )
        prompt = ops.convert_to_tensor(np.array([prompt_tokens(self.model)], np.int32))
        _, self._self_caches, self._cross_caches = _block(
            prefill(prompt, self_caches, cross_caches, self._encoded)
        )
        self._step = _compiled(
            backbone, lambda t, s, c, e, i: decode(t, s, c, e, i, None)[:2], donate=(1,)
        )
        self._token = ops.convert_to_tensor(np.array([[STEP_TOKEN]], np.int32))
        self._index = ops.convert_to_tensor(np.int32(PROMPT_LENGTH))

    def encoder_seconds(self) -> float:
        return _seconds(lambda: _block(self._encode(self._features)))

    def decoder_step_seconds(self) -> float:
        start = time.perf_counter()
        logits, self._self_caches = self._step(
            self._token, self._self_caches, self._cross_caches, self._encoded, self._index
        )
        _block(logits)
        return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

ENGINES: dict[str, Callable[[ModelSpec], Engine]] = {
    "kw-jax": lambda model: KerasWhisperEngine(model, "jax"),
    "kw-torch": lambda model: KerasWhisperEngine(model, "torch"),
    "kw-jax-compile": lambda model: KerasWhisperEngine(model, "jax", disk_cache=False),
    # Half precision: on CPUs with bfloat16 matrix units (AMX) the products run there.
    "kw-jax-bf16": lambda model: KerasWhisperEngine(model, "jax", dtype="bfloat16"),
    "fw-fp32": lambda model: FasterWhisperEngine(model, "float32"),
    "fw-int8": lambda model: FasterWhisperEngine(model, "int8"),
    "oai": OpenAIWhisperEngine,
    # float16 only: whisper.cpp 1.8.5's CPU convolution aborts on float32 kernels, so it
    # cannot run a float32 file (its own `use-f32` conversion included).
    "wcpp-fp16": lambda model: WhisperCppEngine(model, "float16"),
    "hf": TransformersEngine,
    "kerashub": KerasHubEngine,
    "kerashub-torch": lambda model: KerasHubEngine(model, "torch"),
}

# Which engines each section runs, in interleaving order.
E2E_ENGINES = ("kw-jax", "kw-jax-bf16", "fw-fp32", "fw-int8", "oai", "wcpp-fp16")
# End-to-end engines that run only when `--engines` names them (the PyTorch backend).
E2E_ON_REQUEST = ("kw-torch",)
MODEL_ENGINES = (
    "kw-jax",
    "kw-jax-bf16",
    "kw-torch",
    "fw-fp32",
    "fw-int8",
    "oai",
    "hf",
    "kerashub",
    "kerashub-torch",
)
# keras-whisper twice: compiling every stage (a machine's first process) and loading the
# stages compiled by an earlier process (`keras_whisper.decoding.compilation_cache`).
COLDSTART_ENGINES = ("kw-jax-compile", "kw-jax", "fw-fp32", "fw-int8", "oai")
