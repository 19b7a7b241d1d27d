"""WhisperBackbone: the seed's API, OpenAI's numerics, caching, dtypes, saving."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
from conftest import SEED_PAGE, SMALL_CONFIG, random_state_dict
from numpy_reference import decode, encode, logits

import keras_whisper
from keras_whisper import WhisperBackbone
from keras_whisper.converters.mapping import assign_state_dict


def small_backbone(seed=0, **overrides):
    config = {**SMALL_CONFIG, **overrides}
    backbone = WhisperBackbone(**config)
    sd = random_state_dict(config, seed)
    assign_state_dict(backbone, sd)
    return backbone, sd


def small_inputs(batch=2, frames=37, tokens=9, seed=1, num_mels=16):
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, tokens), "int32")
    mask[-1, -3:] = 0  # right padding in the last row
    return {
        "encoder_features": rng.standard_normal((batch, frames, num_mels)).astype("float32"),
        "decoder_token_ids": rng.integers(0, 100, (batch, tokens)).astype("int32"),
        "decoder_padding_mask": mask,
    }


def test_seed_example_runs_as_written():
    """The WhisperBackbone example of the seed page, with our import."""
    text = SEED_PAGE.read_text()
    block = re.search(r"```python\n(input_data = .*?)```", text, re.S).group(1)
    assert "keras_hub.models.WhisperBackbone" in block
    code = block.replace("keras_hub.models.", "keras_whisper.")
    namespace = {"np": np, "keras_whisper": keras_whisper}
    exec(code, namespace)
    outputs = namespace["model"](namespace["input_data"])
    assert tuple(outputs["encoder_sequence_output"].shape) == (1, 6, 256)
    assert tuple(outputs["decoder_sequence_output"].shape) == (1, 12, 256)
    # Word for word, with keras-hub's name bound to ours (`import keras_whisper as keras_hub`).
    namespace = {"np": np, "keras_hub": keras_whisper}
    exec(block, namespace)
    outputs = namespace["model"](namespace["input_data"])
    assert tuple(outputs["decoder_sequence_output"].shape) == (1, 12, 256)
    assert keras_whisper.models.Backbone is keras_whisper.Backbone


def test_matches_independent_numpy_forward_pass():
    backbone, sd = small_backbone()
    inputs = small_inputs()
    outputs = backbone(inputs)
    enc = keras.ops.convert_to_numpy(outputs["encoder_sequence_output"])
    dec = keras.ops.convert_to_numpy(outputs["decoder_sequence_output"])
    ref_enc = encode(inputs["encoder_features"], sd, num_heads=4)
    ref_dec = decode(
        inputs["decoder_token_ids"], ref_enc, sd, 4, padding_mask=inputs["decoder_padding_mask"]
    )
    assert enc.shape == (2, 19, 32)  # ceil(37 / 2)
    np.testing.assert_allclose(enc, ref_enc, atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(dec, ref_dec, atol=2e-5, rtol=1e-4)
    ours = keras.ops.convert_to_numpy(backbone.logits(outputs["decoder_sequence_output"]))
    np.testing.assert_allclose(ours, logits(ref_dec, sd), atol=1e-4, rtol=1e-4)
    assert ours.dtype == np.float32


@pytest.mark.parametrize("dtype, atol", [("float32", 2e-5), ("bfloat16", 0.15)])
def test_fused_encoder_attention_matches_numpy_reference(monkeypatch, dtype, atol):
    """The encoder through `ops.dot_product_attention` (the GPU path) computes the same."""
    from keras_whisper import layers

    backbone, sd = small_backbone(dtype=dtype)
    features = small_inputs()["encoder_features"]
    calls = []
    fused = layers.WhisperAttention._fused
    monkeypatch.setattr(layers, "FUSED_ATTENTION", True)
    monkeypatch.setattr(
        layers.WhisperAttention, "_fused", lambda *args: calls.append(1) or fused(*args)
    )
    out = keras.ops.convert_to_numpy(keras.ops.cast(backbone.encode(features), "float32"))
    assert len(calls) == SMALL_CONFIG["num_layers"]
    np.testing.assert_allclose(out, encode(features, sd, num_heads=4), atol=atol, rtol=1e-4)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the blocked path is JAX-on-CPU's")
def test_blocked_encoder_attention_matches_numpy_reference(monkeypatch):
    """The encoder's attention in query blocks (CPU) computes the same, partial block included."""
    from keras_whisper import layers

    monkeypatch.setattr(layers, "QUERY_BLOCK", 4)  # 19 positions: blocks of 4, 4, 4, 4, 3
    backbone, sd = small_backbone()
    features = small_inputs()["encoder_features"]
    calls = []
    blocked = layers.WhisperAttention._blocked
    monkeypatch.setattr(
        layers.WhisperAttention, "_blocked", lambda *args: calls.append(1) or blocked(*args)
    )
    out = keras.ops.convert_to_numpy(backbone.encode(features))
    assert len(calls) == SMALL_CONFIG["num_layers"]
    np.testing.assert_allclose(out, encode(features, sd, num_heads=4), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("width", [40, 3072, 51864, 51865])
@pytest.mark.parametrize("k", [1, 6])
def test_top_k_matches_a_stable_sort(width, k):
    """`layers.top_k` (two stages over blocks on JAX/CPU) against NumPy's stable sort:
    the same values and indices, ties to the lower index, with -inf entries, a row of
    many ties and a row of only -inf."""
    from keras_whisper import layers

    rng = np.random.default_rng(width + k)
    x = (rng.standard_normal((5, width)) * 3).astype("float32")
    x[1, rng.random(width) < 0.5] = -np.inf
    x[2] = np.round(x[2])  # many ties, a few of them at the top
    x[3] = -np.inf
    x[4, -3:] = 50.0  # the best in the last (padded) block
    order = np.argsort(-x, axis=-1, kind="stable")[:, :k]
    values, indices = layers.top_k(keras.ops.convert_to_tensor(x), k)
    values, indices = keras.ops.convert_to_numpy(values), keras.ops.convert_to_numpy(indices)
    np.testing.assert_array_equal(values, np.take_along_axis(x, order, axis=-1))
    np.testing.assert_array_equal(np.take_along_axis(x, indices, axis=-1), values)
    if keras.backend.backend() == "jax":
        # XLA's top-k breaks ties by index, and so must the two stages; PyTorch's does
        # not promise an order among ties.
        np.testing.assert_array_equal(indices, order)


@pytest.mark.parametrize("width", [1, 32, 33, 63, 449, 1500, 51865])
def test_row_reductions_match_numpy(width):
    """Row max, argmax, sum, softmax, log-softmax and logsumexp (folded on JAX/CPU, odd
    widths included) against NumPy in float64; -inf entries, a tie, a row of only -inf."""
    from keras_whisper import layers

    rng = np.random.default_rng(width)
    x = (rng.standard_normal((4, width)) * 8).astype("float32")
    x[1, rng.random(width) < 0.3] = -np.inf
    x[1, width // 2] = 3.0  # at least one finite entry
    x[3] = -np.inf
    x[2, width // 3] = x[2, (2 * width) // 3] = 100.0  # a tie: the first index wins
    wide = x.astype("float64")
    peak = wide.max(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shifted = np.exp(wide - np.where(np.isfinite(peak), peak, 0))
        expected_lse = np.log(shifted.sum(-1)) + np.where(np.isfinite(peak), peak, 0)[:, 0]

    def numpy_of(fn, rows):
        return keras.ops.convert_to_numpy(fn(keras.ops.convert_to_tensor(x[rows])))

    np.testing.assert_array_equal(numpy_of(layers.row_max, slice(None)), peak)
    np.testing.assert_array_equal(numpy_of(layers.row_argmax, slice(None)), x.argmax(-1))
    np.testing.assert_array_equal(numpy_of(layers.logsumexp, slice(3, 4)), [-np.inf])
    finite = slice(0, 3)
    np.testing.assert_allclose(
        numpy_of(layers.row_sum, slice(0, 1)), wide[:1].sum(-1, keepdims=True), rtol=1e-5, atol=1e-3
    )
    np.testing.assert_allclose(numpy_of(layers.logsumexp, finite), expected_lse[finite], rtol=1e-6)
    np.testing.assert_allclose(
        numpy_of(layers.log_softmax, finite),
        wide[finite] - expected_lse[finite, None],
        rtol=1e-6,
        atol=1e-5,
    )
    np.testing.assert_allclose(
        numpy_of(layers.softmax, finite),
        np.exp(wide[finite] - expected_lse[finite, None]),
        rtol=1e-5,
        atol=1e-7,
    )


@pytest.mark.parametrize("shape", [(1, 1, 64), (1, 64), (5, 64), (3, 1, 64), (17, 64), (2, 9, 64)])
def test_tied_logits_match_numpy_for_any_number_of_rows(shape):
    """`TokenEmbedding(..., reverse=True)` is `hidden @ table.T` for one row (doubled on
    PyTorch's CPU backend), a few (the table on the left there) and more (17, 18)."""
    from keras_whisper import layers

    rng = np.random.default_rng(sum(shape))
    table = rng.standard_normal((1000, 64)).astype("float32")
    hidden = rng.standard_normal(shape).astype("float32")
    embedding = layers.TokenEmbedding(1000, 64)
    embedding.build((None,))
    embedding.embeddings.assign(table)
    out = embedding(keras.ops.convert_to_tensor(hidden), reverse=True)
    out = keras.ops.convert_to_numpy(out)
    assert out.shape == shape[:-1] + (1000,)
    expected = hidden.astype("float64") @ table.T.astype("float64")
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "a_shape, b_shape, transpose_b",
    [((1, 384), (384, 1000), False), ((1, 1, 96), (500, 96), True), ((2, 7, 96), (96, 300), False)],
)
def test_bfloat16_products_accumulate_in_float32(a_shape, b_shape, transpose_b):
    """`layers.matmul` of bfloat16 operands: on JAX/CPU summed in float32 (the matrix-unit
    path, single rows included), so only the inputs' rounding separates it from float64."""
    import ml_dtypes

    from keras_whisper import layers

    rng = np.random.default_rng(0)
    a = rng.standard_normal(a_shape).astype(ml_dtypes.bfloat16)
    b = rng.standard_normal(b_shape).astype(ml_dtypes.bfloat16)
    a_wide, b_wide = a.astype("float64"), b.astype("float64")
    expected = a_wide @ (b_wide.T if transpose_b else b_wide)
    product = layers.matmul(
        keras.ops.convert_to_tensor(a), keras.ops.convert_to_tensor(b), "float32", transpose_b
    )
    ours = keras.ops.convert_to_numpy(product)
    assert ours.shape == expected.shape and ours.dtype == np.float32
    if layers.float32_accumulation("bfloat16"):
        # float32 sums of exact bfloat16 products: ~1e-6 relative to the terms' scale.
        np.testing.assert_allclose(ours, expected, atol=1e-4 * np.sqrt(a_shape[-1]), rtol=0)
    else:  # the backend's own bfloat16 product, rounded to bfloat16
        np.testing.assert_allclose(ours, expected, atol=0.05 * np.sqrt(a_shape[-1]), rtol=0.01)


def test_dense_project_returns_the_float32_sum_unrounded():
    """`Dense.project(x, "float32")` of a bfloat16 layer (the cross-attention keys and
    values of bfloat16 decoding on CPUs): the float32 sum, not its bfloat16 rounding."""
    import ml_dtypes

    from keras_whisper import layers

    layer = layers.Dense(64, dtype="bfloat16")
    layer.build((None, 96))
    rng = np.random.default_rng(3)
    layer.kernel.assign(rng.standard_normal((96, 64)).astype(ml_dtypes.bfloat16))
    layer.bias.assign(rng.standard_normal(64).astype(ml_dtypes.bfloat16))
    x = rng.standard_normal((5, 96)).astype(ml_dtypes.bfloat16)
    kernel = keras.ops.convert_to_numpy(layer.kernel).astype("float64")
    bias = keras.ops.convert_to_numpy(layer.bias).astype("float64")
    expected = x.astype("float64") @ kernel + bias
    projected = keras.ops.convert_to_numpy(layer.project(x, "float32"))
    assert projected.dtype == np.float32
    rounded = keras.ops.convert_to_numpy(keras.ops.cast(layer(x), "float32"))
    if layers.float32_accumulation("bfloat16"):
        np.testing.assert_allclose(projected, expected, atol=1e-3, rtol=0)
        assert np.abs(rounded - expected).max() > 1e-2  # what bfloat16 rounding costs
    else:
        np.testing.assert_allclose(projected, rounded)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_logits_are_float32_sums_in_every_loop_form(dtype):
    """The logits a decoding loop takes (stored table or transposed table, several rows
    or one) are summed and returned in float32 on JAX: a half-precision result would
    round logits near 30 to steps of 0.125 (bfloat16), enough to flip greedy choices."""
    backbone, _ = small_backbone(dtype=dtype)
    rng = np.random.default_rng(5)
    table = keras.ops.convert_to_numpy(
        keras.ops.cast(backbone.token_embedding.embeddings, "float32")
    ).astype("float64")
    for rows in (1, 3):
        hidden = rng.standard_normal((rows, table.shape[1])).astype("float32")
        hidden *= 30.0 / np.abs(hidden @ table.T).max()  # logits up to 30
        hidden = keras.ops.cast(hidden, dtype)
        expected = keras.ops.convert_to_numpy(keras.ops.cast(hidden, "float32")) @ table.T
        forms = {
            "stored": backbone.logits(hidden),
            "transposed": backbone.logits(
                hidden, transposed_embeddings=backbone.transposed_token_embeddings()
            ),
        }
        for form, ours in forms.items():
            ours = keras.ops.convert_to_numpy(ours)
            assert ours.dtype == np.float32, form
            error = np.abs(ours - expected).max()
            if keras.backend.backend() == "jax":
                assert error < 1e-3, (form, rows, error)
            else:  # the backend's own half-precision product, then cast
                assert error < 0.5, (form, rows, error)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX-on-CPU paths")
def test_bfloat16_backbone_on_cpu_paths_matches_numpy_reference(monkeypatch):
    """bfloat16 through the CPU paths (blocked encoder attention, products summed in
    float32, one-row cached decoding) against the float64 NumPy reference."""
    from keras_whisper import layers

    monkeypatch.setattr(layers, "QUERY_BLOCK", 4)
    backbone, sd = small_backbone(dtype="bfloat16")
    inputs = small_inputs(batch=1)
    enc = backbone.encode(inputs["encoder_features"])
    ref_enc = encode(inputs["encoder_features"], sd, num_heads=4)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(keras.ops.cast(enc, "float32")), ref_enc, atol=0.15, rtol=0.02
    )
    # One token at a time through the cache, as a decoding loop of one row does.
    tokens = inputs["decoder_token_ids"]
    cross = backbone.cross_attention_cache(enc)
    cache = backbone.empty_self_attention_cache(1)
    # The caches are float32 there: XLA would convert a bfloat16 cache every step.
    assert backbone.cache_dtype == "float32"
    assert {str(x.dtype) for pair in cross + cache for x in pair} == {"float32"}
    steps = []
    for i in range(tokens.shape[1]):
        hidden, cache = backbone.decode_with_cache(tokens[:, i : i + 1], cache, cross, i)
        steps.append(keras.ops.convert_to_numpy(backbone.logits(hidden[:, 0])))
    ref = logits(decode(tokens, ref_enc, sd, num_heads=4), sd)
    ours = np.stack(steps, axis=1)
    assert ours.dtype == np.float32
    scale = np.abs(ref).max()
    np.testing.assert_allclose(ours, ref, atol=0.05 * scale, rtol=0)


def test_encode_matches_functional_output():
    backbone, _ = small_backbone()
    inputs = small_inputs()
    full = backbone(inputs)["encoder_sequence_output"]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(backbone.encode(inputs["encoder_features"])),
        keras.ops.convert_to_numpy(full),
        atol=1e-6,
    )


def ten_tokens_against_reference(backbone, sd):
    """Two rows of 10 tokens, the NumPy reference's decoder outputs for them, the
    cross-attention cache of their audio and an empty self-attention cache."""
    inputs = small_inputs(tokens=10)
    tokens = inputs["decoder_token_ids"]
    audio = backbone.encode(inputs["encoder_features"])
    reference = decode(tokens, keras.ops.convert_to_numpy(audio), sd, 4)
    cross = backbone.cross_attention_cache(audio)
    return tokens, reference, cross, backbone.empty_self_attention_cache(batch_size=2)


@pytest.mark.parametrize("layout", [None, "fused_qkv", "out_major"])
def test_cached_decoding_matches_full_forward_pass(layout):
    backbone, sd = small_backbone()
    # A decoding loop's prepared weights (one query/key/value product; every kernel
    # transposed for the out-major products) give the same outputs.
    out_major = layout == "out_major"
    step_weights = backbone.step_weights(out_major) if layout else None
    tokens, reference, cross, cache = ten_tokens_against_reference(backbone, sd)
    # A 4-token prompt in one call, then one token per call.
    hidden, cache = backbone.decode_with_cache(
        tokens[:, :4], cache, cross, 0, step_weights, out_major
    )
    steps = [keras.ops.convert_to_numpy(hidden)]
    for i in range(4, 10):
        hidden, cache = backbone.decode_with_cache(
            tokens[:, i : i + 1], cache, cross, i, step_weights, out_major
        )
        steps.append(keras.ops.convert_to_numpy(hidden))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), reference, atol=3e-5, rtol=1e-4)
    # The logits are those of the tied embedding.
    table = sd["decoder.token_embedding.weight"]
    logits = backbone.logits(hidden[:, 0])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(logits), reference[:, -1] @ table.T, atol=1e-4, rtol=1e-4
    )


@pytest.mark.parametrize("output_index", [0, 3, 5])
def test_prompt_with_one_output_matches_full_forward_pass(output_index):
    """A prefill that reads one position's output (the start of transcript's, for the
    no-speech probability): that output, and a cache from which decoding goes on as
    after a full pass, against the NumPy reference."""
    backbone, sd = small_backbone()
    tokens, reference, cross, cache = ten_tokens_against_reference(backbone, sd)
    index = keras.ops.convert_to_tensor(output_index, "int32")
    hidden, cache = backbone.decode_with_cache(tokens[:, :6], cache, cross, 0, output_index=index)
    assert tuple(hidden.shape) == (2, 1, backbone.hidden_dim)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(hidden)[:, 0], reference[:, output_index], atol=3e-5, rtol=1e-4
    )
    steps = []
    for i in range(6, 10):
        hidden, cache = backbone.decode_with_cache(tokens[:, i : i + 1], cache, cross, i)
        steps.append(keras.ops.convert_to_numpy(hidden))
    np.testing.assert_allclose(
        np.concatenate(steps, axis=1), reference[:, 6:], atol=3e-5, rtol=1e-4
    )


@pytest.mark.parametrize("out_major", [False, True])
def test_rows_sharing_a_prompt_match_full_forward_pass(out_major):
    """Beam search's layout: each audio's prompt decoded once, then three rows per audio,
    each with its own continuation, reading the prompt's cache as a shared prefix."""
    backbone, sd = small_backbone()
    group, prompt_length = 3, 4
    inputs = small_inputs(tokens=prompt_length)
    audio = backbone.encode(inputs["encoder_features"])
    prompt = np.repeat(inputs["decoder_token_ids"], group, axis=0)
    own_tokens = np.random.default_rng(2).integers(0, 100, (2 * group, 6)).astype("int32")
    tokens = np.concatenate([prompt, own_tokens], axis=1)
    reference = decode(tokens, np.repeat(keras.ops.convert_to_numpy(audio), group, 0), sd, 4)

    step_weights = backbone.step_weights(out_major)
    cross = backbone.cross_attention_cache(audio)
    shared = backbone.empty_self_attention_cache(2, 8)
    _, shared = backbone.decode_with_cache(inputs["decoder_token_ids"], shared, cross, 0)
    # As a decoding loop does: the prompt's last token is fed again, to the rows' own
    # caches, whose first slot is position `prompt_length - 1`.
    own = backbone.empty_self_attention_cache(2 * group, 8)
    prefix = (shared, prompt_length - 1)
    steps = []
    for i in range(prompt_length - 1, tokens.shape[1]):
        hidden, own = backbone.decode_with_cache(
            tokens[:, i : i + 1], own, cross, i, step_weights, out_major, prefix=prefix
        )
        steps.append(keras.ops.convert_to_numpy(hidden))
    np.testing.assert_allclose(
        np.concatenate(steps, axis=1), reference[:, prompt_length - 1 :], atol=3e-5, rtol=1e-4
    )


def test_quantized_projections_are_not_prepared():
    # An int8 kernel is not a plain matrix: concatenating or transposing it would drop
    # its scales.
    backbone, _ = small_backbone()
    assert backbone.step_weights() is not None
    assert backbone.step_weights(out_major=True) is not None
    backbone.quantize("int8")
    assert backbone.step_weights() is None
    assert backbone.step_weights(out_major=True) is None


def test_outputs_are_after_final_layer_norm_and_shapes_are_ceil_half():
    backbone, sd = small_backbone()
    for frames in (1, 2, 5, 40):
        out = backbone.encode(np.zeros((1, frames, 16), "float32"))
        assert tuple(out.shape) == (1, (frames + 1) // 2, 32)
    # After LN with gain g and bias b, each row's (x - b) / g has zero mean.
    out = keras.ops.convert_to_numpy(backbone.encode(np.ones((1, 8, 16), "float32")))
    normalized = (out - sd["encoder.ln_post.bias"]) / sd["encoder.ln_post.weight"]
    np.testing.assert_allclose(normalized.mean(-1), 0.0, atol=1e-5)


def test_key_projections_have_no_bias():
    backbone, _ = small_backbone()
    for layer in backbone.encoder_transformer_layers:
        assert layer.self_attention.key.bias is None
        assert layer.self_attention.query.bias is not None
    for layer in backbone.decoder_transformer_layers:
        assert layer.self_attention.key.bias is None
        assert layer.cross_attention.key.bias is None


def test_encoder_positions_are_fixed_sinusoids():
    backbone = WhisperBackbone(**SMALL_CONFIG)
    table = keras.ops.convert_to_numpy(backbone.encoder_position_embedding.embeddings)
    # Whisper's table: sin(t / 10000^(i/(C/2-1))) then cos of the same.
    half = 16
    t = np.arange(20)[:, None]
    inv = np.exp(-np.log(10000) / (half - 1) * np.arange(half))
    np.testing.assert_allclose(table[:, :half], np.sin(t * inv), atol=1e-6)
    np.testing.assert_allclose(table[:, half:], np.cos(t * inv), atol=1e-6)
    assert table.shape == (20, 32)  # max_encoder_sequence_length // 2 rows
    variable = backbone.encoder_position_embedding.embeddings
    assert any(v is variable for v in backbone.non_trainable_weights)
    backbone.trainable = True
    assert not any(v is variable for v in backbone.trainable_weights)


def test_num_decoder_layers():
    backbone = WhisperBackbone(**SMALL_CONFIG, num_decoder_layers=1)
    assert len(backbone.encoder_transformer_layers) == 2
    assert len(backbone.decoder_transformer_layers) == 1
    assert backbone.get_config()["num_decoder_layers"] == 1
    out = backbone(small_inputs())
    assert tuple(out["decoder_sequence_output"].shape) == (2, 9, 32)
    # Default: the seed's behaviour, one depth for both stacks.
    assert WhisperBackbone(**SMALL_CONFIG).num_decoder_layers == 2


def test_dropout_only_in_training():
    backbone, sd = small_backbone(dropout=0.3)
    plain, _ = small_backbone(dropout=0.0)
    inputs = small_inputs()
    inference = keras.ops.convert_to_numpy(backbone(inputs)["decoder_sequence_output"])
    reference = keras.ops.convert_to_numpy(plain(inputs)["decoder_sequence_output"])
    np.testing.assert_allclose(inference, reference, atol=1e-6)
    training = keras.ops.convert_to_numpy(
        backbone(inputs, training=True)["decoder_sequence_output"]
    )
    assert np.abs(training - reference).max() > 1e-3


def test_variable_lengths_and_predict():
    backbone, _ = small_backbone()
    inputs = small_inputs()
    for length in (2, 3, 4):
        sliced = {k: v[:, :length] for k, v in inputs.items()}
        out = backbone(sliced)
        assert out["decoder_sequence_output"].shape[1] == length
    predicted = backbone.predict(inputs, verbose=0)
    np.testing.assert_allclose(
        predicted["encoder_sequence_output"],
        keras.ops.convert_to_numpy(backbone(inputs)["encoder_sequence_output"]),
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "dtype, compute, variable",
    [
        (None, "float32", "float32"),
        ("float32", "float32", "float32"),
        ("float16", "float16", "float16"),
        ("bfloat16", "bfloat16", "bfloat16"),
        ("mixed_float16", "float16", "float32"),
        ("mixed_bfloat16", "bfloat16", "float32"),
        (keras.DTypePolicy("mixed_bfloat16"), "bfloat16", "float32"),
    ],
)
def test_dtype_policies(dtype, compute, variable):
    backbone = WhisperBackbone(**SMALL_CONFIG, dtype=dtype)
    sd = random_state_dict(SMALL_CONFIG)
    assign_state_dict(backbone, sd)
    assert backbone.compute_dtype == compute
    for weight in backbone.weights:
        assert keras.backend.standardize_dtype(weight.dtype) == variable, weight.path
    for layer in backbone._flatten_layers(include_self=False):
        if not isinstance(layer, keras.layers.InputLayer):
            assert layer.compute_dtype == compute, layer.name
    inputs = small_inputs()
    # Left padding: the first two query rows have every key masked. With the
    # mask and softmax in float32 they get uniform weights; in float16 the
    # bias would overflow to -inf and the softmax to NaN.
    inputs["decoder_padding_mask"][0, :2] = 0
    out = backbone(inputs)
    for value in out.values():
        assert keras.backend.standardize_dtype(value.dtype) == compute
        assert np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(value, "float32"))).all()
    if compute != "float32":
        ref = keras.ops.convert_to_numpy(
            WhisperBackboneFromSd(sd)(inputs)["decoder_sequence_output"]
        )
        low = keras.ops.convert_to_numpy(keras.ops.cast(out["decoder_sequence_output"], "float32"))
        # Half precision stays close to float32 (bf16 has 8 bits of mantissa).
        assert np.abs(low - ref).max() < 0.15 * np.abs(ref).max()


def WhisperBackboneFromSd(sd):
    backbone = WhisperBackbone(**SMALL_CONFIG)
    assign_state_dict(backbone, sd)
    return backbone


def test_config_round_trip_and_keras_saving(tmp_path):
    backbone, _ = small_backbone(num_decoder_layers=1)
    config = backbone.get_config()
    restored = WhisperBackbone.from_config(config)
    assert restored.get_config() == config
    serialized = keras.saving.serialize_keras_object(backbone)
    assert serialized["registered_name"] == "keras_whisper>WhisperBackbone"
    path = tmp_path / "model.keras"
    backbone.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, WhisperBackbone)
    inputs = small_inputs()
    a, b = backbone(inputs), loaded(inputs)
    for key in a:
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(a[key]), keras.ops.convert_to_numpy(b[key])
        )


def test_fit_trains_through_tied_logits():
    backbone, _ = small_backbone()
    inputs = small_inputs()
    before = keras.ops.convert_to_numpy(backbone.token_embedding.embeddings).copy()
    features = keras.Input((None, 16))
    tokens = keras.Input((None,), dtype="int32")
    mask = keras.Input((None,), dtype="int32")
    hidden = backbone(
        {"encoder_features": features, "decoder_token_ids": tokens, "decoder_padding_mask": mask}
    )["decoder_sequence_output"]
    model = keras.Model([features, tokens, mask], backbone.token_embedding(hidden, reverse=True))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = [inputs["encoder_features"], inputs["decoder_token_ids"], inputs["decoder_padding_mask"]]
    history = model.fit(x, inputs["decoder_token_ids"], epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert (
        np.abs(keras.ops.convert_to_numpy(backbone.token_embedding.embeddings) - before).max() > 0
    )


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda x: x.pop("decoder_padding_mask"), "decoder_padding_mask"),
        (lambda x: x.update(extra=np.zeros((2, 3))), "unexpected"),
        (lambda x: x.update(encoder_features=np.zeros((2, 37, 5), "float32")), "num_mels=16"),
        (lambda x: x.update(encoder_features=np.zeros((37, 16), "float32")), "num_mels"),
        (lambda x: x.update(encoder_features=np.zeros((2, 41, 16), "float32")), "41 frames"),
        (lambda x: x.update(decoder_token_ids=np.zeros((2, 13), "int32")), "same shape"),
        (
            lambda x: x.update(
                decoder_token_ids=np.zeros((2, 13), "int32"),
                decoder_padding_mask=np.ones((2, 13), "int32"),
            ),
            "13 tokens",
        ),
        (lambda x: x.update(decoder_token_ids=np.zeros((2, 9), "float32")), "integer"),
        (lambda x: x.update(decoder_padding_mask=np.ones((2, 9, 1), "int32")), "(batch, tokens)"),
    ],
)
def test_bad_inputs_have_clear_errors(change, message):
    backbone, _ = small_backbone()
    inputs = small_inputs()
    change(inputs)
    with pytest.raises(ValueError, match=re.escape(message)):
        backbone(inputs)
    with pytest.raises(ValueError, match="dict"):
        backbone([inputs["encoder_features"]])


@pytest.mark.parametrize(
    "override, message",
    [
        (dict(num_heads=5), "divisible by `num_heads`"),
        (dict(num_layers=0), "`num_layers` must be a positive integer"),
        (dict(hidden_dim=32.0), "`hidden_dim` must be a positive integer"),
        (dict(dropout=1.5), "`dropout`"),
        (dict(num_decoder_layers=-1), "`num_decoder_layers`"),
    ],
)
def test_bad_configs_have_clear_errors(override, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        WhisperBackbone(**{**SMALL_CONFIG, **override})
