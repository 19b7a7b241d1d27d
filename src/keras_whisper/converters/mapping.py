"""OpenAI's Whisper state dict <-> `WhisperBackbone` variables.

Every foreign checkpoint format is first read into OpenAI's `model_state_dict`
naming (`encoder.blocks.0.attn.query.weight`, ...), with OpenAI's layouts
(linear weights `(out, in)`, conv weights `(out, in, kernel)`); this module is
the single place that knows how those map onto our variables.
"""

from __future__ import annotations

from collections.abc import Iterator

import keras
import numpy as np

from keras_whisper.errors import WeightsError

# How an OpenAI tensor becomes a Keras one (and back).
_COPY = "copy"
_LINEAR = "linear"  # (out, in) <-> (in, out)
_CONV = "conv"  # (out, in, k) <-> (k, in, out)


def _attention(openai_prefix: str, keras_prefix: str) -> Iterator[tuple[str, str, str]]:
    for ours, theirs in (
        ("query", "query"),
        ("key", "key"),
        ("value", "value"),
        ("attention_output", "out"),
    ):
        yield f"{openai_prefix}.{theirs}.weight", f"{keras_prefix}/{ours}/kernel", _LINEAR
        if ours != "key":  # Whisper's key projection has no bias.
            yield f"{openai_prefix}.{theirs}.bias", f"{keras_prefix}/{ours}/bias", _COPY


def _layer_norm(openai_prefix: str, keras_prefix: str) -> Iterator[tuple[str, str, str]]:
    yield f"{openai_prefix}.weight", f"{keras_prefix}/gamma", _COPY
    yield f"{openai_prefix}.bias", f"{keras_prefix}/beta", _COPY


def _mlp(openai_prefix: str, keras_prefix: str) -> Iterator[tuple[str, str, str]]:
    for index, ours in ((0, "feedforward_intermediate_dense"), (2, "feedforward_output_dense")):
        yield f"{openai_prefix}.mlp.{index}.weight", f"{keras_prefix}/{ours}/kernel", _LINEAR
        yield f"{openai_prefix}.mlp.{index}.bias", f"{keras_prefix}/{ours}/bias", _COPY
    yield from _layer_norm(f"{openai_prefix}.mlp_ln", f"{keras_prefix}/feedforward_layer_norm")


def name_map(num_layers: int, num_decoder_layers: int) -> list[tuple[str, str, str]]:
    """`(openai_name, keras_variable_path, transform)` for every weight.

    Args:
        num_layers: encoder depth.
        num_decoder_layers: decoder depth.
    """
    entries: list[tuple[str, str, str]] = []
    for i in (1, 2):
        conv = f"encoder_token_embedding_conv_layer_{i}"
        entries.append((f"encoder.conv{i}.weight", f"{conv}/kernel", _CONV))
        entries.append((f"encoder.conv{i}.bias", f"{conv}/bias", _COPY))
    entries.append(("encoder.positional_embedding", "encoder_position_embedding/embeddings", _COPY))
    for i in range(num_layers):
        src, dst = f"encoder.blocks.{i}", f"transformer_encoder_layer_{i}"
        entries += _attention(f"{src}.attn", f"{dst}/self_attention")
        entries += _layer_norm(f"{src}.attn_ln", f"{dst}/self_attention_layer_norm")
        entries += _mlp(src, dst)
    entries += _layer_norm("encoder.ln_post", "encoder_layer_norm")
    entries.append(("decoder.token_embedding.weight", "token_embedding/embeddings", _COPY))
    entries.append(("decoder.positional_embedding", "decoder_position_embedding/embeddings", _COPY))
    for i in range(num_decoder_layers):
        src, dst = f"decoder.blocks.{i}", f"transformer_decoder_layer_{i}"
        entries += _attention(f"{src}.attn", f"{dst}/self_attention")
        entries += _layer_norm(f"{src}.attn_ln", f"{dst}/self_attention_layer_norm")
        entries += _attention(f"{src}.cross_attn", f"{dst}/cross_attention")
        entries += _layer_norm(f"{src}.cross_attn_ln", f"{dst}/cross_attention_layer_norm")
        entries += _mlp(src, dst)
    entries += _layer_norm("decoder.ln", "decoder_layer_norm")
    return entries


def _transpose(value: np.ndarray, transform: str) -> np.ndarray:
    """OpenAI layout <-> Keras layout (each transform is its own inverse)."""
    if transform == _LINEAR:
        return value.T
    if transform == _CONV:
        return np.transpose(value, (2, 1, 0))
    return value


def keras_weights(backbone, state_dict: dict[str, np.ndarray], source: str = "") -> dict:
    """Map an OpenAI-named state dict onto a `WhisperBackbone`'s variable paths.

    Every variable must be covered, every tensor used, shapes must fit and
    values be finite; otherwise a `WeightsError` names the problem. Works on
    a backbone whose variables are not initialised yet (only shapes are read).

    Args:
        backbone: a `WhisperBackbone`.
        state_dict: OpenAI name -> array.
        source: where the tensors came from, for error messages.

    Returns:
        Keras variable path -> array in Keras layout.
    """
    where = f" in {source}" if source else ""
    entries = name_map(backbone.num_layers, backbone.num_decoder_layers)
    variables = {v.path: v for v in backbone.weights}
    if {path for _, path, _ in entries} != set(variables):
        raise WeightsError(f"Internal error: the name map does not cover the model{where}.")
    missing = [name for name, _, _ in entries if name not in state_dict]
    unexpected = sorted(set(state_dict) - {name for name, _, _ in entries})
    if missing or unexpected:
        raise WeightsError(
            f"The checkpoint{where} does not fit a Whisper model with {backbone.num_layers} "
            f"encoder / {backbone.num_decoder_layers} decoder layers: missing {missing[:4]}"
            f"{' ...' if len(missing) > 4 else ''}, unexpected {unexpected[:4]}"
            f"{' ...' if len(unexpected) > 4 else ''}."
        )
    values = {}
    for name, path, transform in entries:
        original = np.asarray(state_dict[name])
        value = _transpose(original, transform)
        shape = tuple(variables[path].shape)
        if tuple(value.shape) != shape:
            expected = _transpose(np.empty(shape, "int8"), transform).shape
            raise WeightsError(
                f"`{name}`{where} has shape {tuple(original.shape)}, which does not fit the "
                f"config (expected {tuple(expected)})."
            )
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise WeightsError(
                f"`{name}`{where} holds NaN or infinite values: the checkpoint is corrupt."
            )
        values[path] = value
    return values


def assign_state_dict(backbone, state_dict: dict[str, np.ndarray], source: str = "") -> None:
    """Load an OpenAI-named state dict into a built `WhisperBackbone` (see `keras_weights`)."""
    from keras_whisper.preset_io import assign_weights

    assign_weights(backbone, keras_weights(backbone, state_dict, source))


def state_dict_from_backbone(backbone) -> dict[str, np.ndarray]:
    """The OpenAI-named state dict of a `WhisperBackbone` (NumPy, model dtype)."""
    variables = {v.path: v for v in backbone.weights}
    return {
        name: np.ascontiguousarray(
            _transpose(keras.ops.convert_to_numpy(variables[path]), transform)
        )
        for name, path, transform in name_map(backbone.num_layers, backbone.num_decoder_layers)
    }
