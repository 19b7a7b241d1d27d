"""`Backbone`, the preset-aware base model, and `WhisperBackbone`."""

from __future__ import annotations

import keras
from keras import ops

from keras_whisper.layers import (
    CausalPaddingMask,
    PositionEmbedding,
    TokenEmbedding,
    WhisperDecoderBlock,
    WhisperEncoderBlock,
    float32_accumulation,
    keep_input_dtype,
    matmul,
    out_major_matmul,
    to_residual,
    whisper_kernel_initializer,
)


class _ClassProperty:
    """A read-only property of the class (used for `Backbone.presets`)."""

    def __init__(self, fget):
        self.fget = fget
        self.__doc__ = fget.__doc__

    def __get__(self, _, owner):
        return self.fget(owner)


class Backbone(keras.Model):
    """Base class of keras-whisper backbones: presets in and out.

    A subclass builds a functional model in its `__init__`; this class adds
    `from_preset`, `save_to_preset`, `presets` and a `get_config` made of the
    constructor's arguments (not the functional graph), as keras-hub does.
    Calling `Backbone.from_preset(...)` infers the subclass from the preset's
    `config.json`.
    """

    def __init__(self, *args, dtype=None, **kwargs):
        super().__init__(*args, **kwargs)
        if dtype is not None:
            self.dtype_policy = keras.dtype_policies.get(dtype)

    def __setattr__(self, name, value):
        # Subclasses create their layers before the functional model exists.
        # On PyTorch, a torch.nn.Module refuses attributes before its own
        # __init__; the functional graph tracks every layer anyway, so plain
        # attributes are enough until then.
        if keras.backend.backend() == "torch" and not hasattr(self, "_initialized"):
            return object.__setattr__(self, name, value)
        return super().__setattr__(name, value)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)

    @_ClassProperty
    def presets(cls) -> dict:
        """The built-in presets of this class and its subclasses: name -> config, metadata."""
        from keras_whisper.presets import builtin_presets

        return builtin_presets(cls)

    @classmethod
    def from_preset(cls, preset: str, load_weights: bool = True, **kwargs) -> Backbone:
        """Instantiate a backbone from a model preset.

        A preset is a directory of configs, weights and other files. The
        `preset` can be one of:

        1. a built-in preset identifier like `"whisper_tiny_en"`;
        2. a Kaggle Models handle like `"kaggle://user/whisper/keras/whisper_tiny_en"`;
        3. a Hugging Face handle like `"hf://user/whisper_tiny_en"`;
        4. a path to a local preset directory like `"./whisper_tiny_en"`.

        Called on the base class, `keras_whisper.Backbone.from_preset()`, the
        subclass is inferred from the preset's config. Run
        `cls.presets.keys()` to list the built-in presets.

        Args:
            preset: string. A built-in preset identifier, a Kaggle Models
                handle, a Hugging Face handle, or a path to a local directory.
            load_weights: bool. If `True`, the weights are loaded into the
                model. If `False`, the model is randomly initialised and no
                weight file is read.
            **kwargs: overrides of the preset's config, e.g. `dtype="bfloat16"`.

        Examples:
        ```python
        # Load a Whisper backbone with pre-trained weights.
        model = keras_whisper.Backbone.from_preset("whisper_tiny_en")
        # Load a Whisper backbone with a pre-trained config and random weights.
        model = keras_whisper.WhisperBackbone.from_preset(
            "whisper_base_multi", load_weights=False
        )
        ```
        """
        from keras_whisper.preset_io import load_backbone

        return load_backbone(cls, preset, load_weights=load_weights, **kwargs)

    def save_to_preset(self, preset_dir: str, overwrite: bool = False) -> None:
        """Save this backbone as a preset directory that `from_preset` reads.

        Writes `config.json` (naming the class), `metadata.json` and
        `model.safetensors` (weights keyed by variable path; loading runs no
        code). The directory is written atomically.

        Args:
            preset_dir: string. The directory to create.
            overwrite: bool. If `False` (default), refuse to write into an
                existing non-empty directory.
        """
        from keras_whisper.preset_io import save_backbone

        save_backbone(self, preset_dir, overwrite=overwrite)


@keras.saving.register_keras_serializable(package="keras_whisper")
class WhisperBackbone(Backbone):
    """A Whisper encoder-decoder network for speech.

    This class implements a Transformer-based encoder-decoder model as
    described in
    ["Robust Speech Recognition via Large-Scale Weak Supervision"](https://arxiv.org/abs/2212.04356),
    exactly as OpenAI's Whisper computes it: a convolutional stem (kernel 3,
    strides 1 and 2, exact GELU), fixed sinusoidal encoder positions, pre-LN
    transformer blocks without a key-projection bias, a learned decoder
    position table, causal self-attention plus cross-attention, and final
    LayerNorms. It includes the embedding lookups and transformer layers, but
    not the head for predicting the next token: `logits()` applies the tied
    token embedding.

    The default constructor gives a fully customizable, randomly initialized
    Whisper model with any number of layers, heads, and embedding dimensions.
    To load preset architectures and weights, use the `from_preset()`
    constructor.

    Disclaimer: Pre-trained models are provided on an "as is" basis, without
    warranties or conditions of any kind. The underlying model is provided by
    a third party and subject to a separate license, available
    [here](https://github.com/openai/whisper).

    Args:
        vocabulary_size: int. The size of the token vocabulary.
        num_layers: int. The number of transformer encoder layers and, unless
            `num_decoder_layers` is given, transformer decoder layers.
        num_heads: int. The number of attention heads for each transformer.
            The hidden size must be divisible by the number of attention heads.
        hidden_dim: int. The size of the transformer encoding and pooler layers.
        intermediate_dim: int. The output dimension of the first Dense layer in
            a two-layer feedforward network for each transformer.
        num_mels: int. The number of mel-frequency filters. Defaults to `80`.
        dropout: float. Dropout probability for the Transformer encoder and
            decoder, applied in training only.
        max_encoder_sequence_length: int. The maximum sequence length that the
            audio encoder can consume, in mel frames. Since the second
            convolutional layer in the encoder reduces the sequence length by
            half (stride of 2), we use `max_encoder_sequence_length // 2` as
            the sequence length for the positional embedding layer.
        max_decoder_sequence_length: int. The maximum sequence length that the
            text decoder can consume.
        dtype: string or `keras.DTypePolicy`. The dtype to use for model
            computations and weights. Softmax and layer normalization are
            always computed at float32 precision regardless of dtype (and, in
            half precision, the residual stream between the blocks).
        num_decoder_layers: int, optional. The number of decoder layers, for
            models whose decoder is shallower than the encoder
            (large-v3-turbo: 32/4, distil-whisper: 32/2). Defaults to
            `num_layers`.

    Examples:
    ```python
    input_data = {
        "encoder_features": np.ones(shape=(1, 12, 80), dtype="int32"),
        "decoder_token_ids": np.ones(shape=(1, 12), dtype="int32"),
        "decoder_padding_mask": np.array(
            [[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]]
        ),
    }
    # Randomly initialized Whisper encoder-decoder model with a custom config.
    model = keras_whisper.WhisperBackbone(
        vocabulary_size=51864,
        num_layers=4,
        num_heads=4,
        hidden_dim=256,
        intermediate_dim=512,
        max_encoder_sequence_length=128,
        max_decoder_sequence_length=128,
    )
    model(input_data)
    ```
    """

    input_names = ("encoder_features", "decoder_token_ids", "decoder_padding_mask")

    def __init__(
        self,
        vocabulary_size: int,
        num_layers: int,
        num_heads: int,
        hidden_dim: int,
        intermediate_dim: int,
        num_mels: int = 80,
        dropout: float = 0.0,
        max_encoder_sequence_length: int = 3000,
        max_decoder_sequence_length: int = 448,
        dtype=None,
        num_decoder_layers: int | None = None,
        **kwargs,
    ):
        num_decoder_layers = num_layers if num_decoder_layers is None else num_decoder_layers
        _check_config(
            vocabulary_size=vocabulary_size,
            num_layers=num_layers,
            num_decoder_layers=num_decoder_layers,
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            intermediate_dim=intermediate_dim,
            num_mels=num_mels,
            max_encoder_sequence_length=max_encoder_sequence_length,
            max_decoder_sequence_length=max_decoder_sequence_length,
            dropout=dropout,
        )

        # === Layers ===
        conv = dict(kernel_size=3, dtype=dtype)
        self.encoder_conv_layer_1 = keras.layers.Conv1D(
            hidden_dim, padding="same", name="encoder_token_embedding_conv_layer_1", **conv
        )
        self.encoder_conv_padding = keras.layers.ZeroPadding1D(
            1, dtype=dtype, name="encoder_token_embedding_padding"
        )
        self.encoder_conv_layer_2 = keras.layers.Conv1D(
            hidden_dim,
            strides=2,
            padding="valid",
            name="encoder_token_embedding_conv_layer_2",
            **conv,
        )
        # From the position embeddings to the final LayerNorms, the layers read the
        # residual stream as it is: float32 in half precision (`residual_dtype`).
        self.encoder_position_embedding = keep_input_dtype(
            PositionEmbedding(
                max_encoder_sequence_length // 2,
                sinusoidal=True,
                dtype=dtype,
                name="encoder_position_embedding",
            )
        )
        self.encoder_embeddings_dropout = keep_input_dtype(
            keras.layers.Dropout(dropout, dtype=dtype, name="encoder_embeddings_dropout")
        )
        self.encoder_transformer_layers = [
            WhisperEncoderBlock(
                num_heads,
                hidden_dim,
                intermediate_dim,
                dropout,
                dtype=dtype,
                name=f"transformer_encoder_layer_{i}",
            )
            for i in range(num_layers)
        ]
        self.encoder_layer_norm = keep_input_dtype(
            keras.layers.LayerNormalization(epsilon=1e-5, dtype=dtype, name="encoder_layer_norm")
        )
        self.token_embedding = TokenEmbedding(
            vocabulary_size,
            hidden_dim,
            embeddings_initializer=whisper_kernel_initializer(),
            dtype=dtype,
            name="token_embedding",
        )
        self.decoder_position_embedding = keep_input_dtype(
            PositionEmbedding(
                max_decoder_sequence_length, dtype=dtype, name="decoder_position_embedding"
            )
        )
        self.decoder_embeddings_dropout = keep_input_dtype(
            keras.layers.Dropout(dropout, dtype=dtype, name="decoder_embeddings_dropout")
        )
        self.decoder_transformer_layers = [
            WhisperDecoderBlock(
                num_heads,
                hidden_dim,
                intermediate_dim,
                dropout,
                dtype=dtype,
                name=f"transformer_decoder_layer_{i}",
            )
            for i in range(num_decoder_layers)
        ]
        self.decoder_layer_norm = keep_input_dtype(
            keras.layers.LayerNormalization(epsilon=1e-5, dtype=dtype, name="decoder_layer_norm")
        )
        self.decoder_attention_mask = CausalPaddingMask(dtype=dtype, name="decoder_attention_mask")

        # === Functional Model ===
        encoder_features = keras.Input(
            shape=(None, num_mels), dtype="float32", name="encoder_features"
        )
        decoder_token_ids = keras.Input(shape=(None,), dtype="int32", name="decoder_token_ids")
        decoder_padding_mask = keras.Input(
            shape=(None,), dtype="int32", name="decoder_padding_mask"
        )
        encoder_output = self._encode(encoder_features)
        decoder_output = self._decode(decoder_token_ids, decoder_padding_mask, encoder_output)
        super().__init__(
            inputs={
                "encoder_features": encoder_features,
                "decoder_token_ids": decoder_token_ids,
                "decoder_padding_mask": decoder_padding_mask,
            },
            outputs={
                "encoder_sequence_output": encoder_output,
                "decoder_sequence_output": decoder_output,
            },
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.num_decoder_layers = num_decoder_layers
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.num_mels = num_mels
        self.dropout = dropout
        self.max_encoder_sequence_length = max_encoder_sequence_length
        self.max_decoder_sequence_length = max_decoder_sequence_length

    # --- The two stacks, shared by the functional graph and generation. ---

    def _encode(self, features, training=None):
        x = keras.activations.gelu(self.encoder_conv_layer_1(features), approximate=False)
        x = self.encoder_conv_padding(x)
        x = keras.activations.gelu(self.encoder_conv_layer_2(x), approximate=False)
        x = self.encoder_position_embedding(self._stream(x))
        x = self.encoder_embeddings_dropout(x, training=training)
        for layer in self.encoder_transformer_layers:
            x = layer(x, training=training)
        return self.encoder_layer_norm(x)

    def _stream(self, x):
        """`x` in the dtype of the residual stream (float32 in half precision)."""
        # (The layers' policy: `self`'s is not set yet while the functional graph is built.)
        return to_residual(x, self.token_embedding.compute_dtype)

    def _decode(self, token_ids, padding_mask, encoder_output, training=None):
        x = self.token_embedding(token_ids)
        x = self.decoder_position_embedding(self._stream(x))
        x = self.decoder_embeddings_dropout(x, training=training)
        mask = self.decoder_attention_mask(padding_mask)
        for layer in self.decoder_transformer_layers:
            x = layer(x, encoder_output, self_attention_mask=mask, training=training)
        return self.decoder_layer_norm(x)

    def __call__(self, inputs, *args, **kwargs):
        # Check before Keras does, so that errors speak of Whisper's inputs.
        self._check_inputs(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def _check_inputs(self, inputs):
        if not isinstance(inputs, dict):
            raise ValueError(
                "WhisperBackbone expects a dict with keys "
                f"{list(self.input_names)}; got {type(inputs).__name__}."
            )
        missing = [k for k in self.input_names if k not in inputs]
        extra = [k for k in inputs if k not in self.input_names]
        if missing or extra:
            raise ValueError(
                f"WhisperBackbone inputs must have exactly the keys {list(self.input_names)}; "
                f"missing {missing}, unexpected {extra}."
            )
        features = inputs["encoder_features"]
        token_ids = inputs["decoder_token_ids"]
        padding_mask = inputs["decoder_padding_mask"]
        shape = tuple(features.shape)
        if len(shape) != 3 or (shape[-1] is not None and shape[-1] != self.num_mels):
            raise ValueError(
                "`encoder_features` must have shape (batch, frames, num_mels="
                f"{self.num_mels}); got {shape}."
            )
        if shape[1] is not None and shape[1] > self.max_encoder_sequence_length:
            raise ValueError(
                f"`encoder_features` has {shape[1]} frames, more than this model's "
                f"max_encoder_sequence_length={self.max_encoder_sequence_length} "
                "(30 s of audio for the Whisper presets). Split the audio into "
                "30-s windows, or use transcribe(), which does it for you."
            )
        for name, value in (
            ("decoder_token_ids", token_ids),
            ("decoder_padding_mask", padding_mask),
        ):
            if len(value.shape) != 2:
                raise ValueError(
                    f"`{name}` must have shape (batch, tokens); got {tuple(value.shape)}."
                )
        if tuple(token_ids.shape) != tuple(padding_mask.shape) and None not in (
            tuple(token_ids.shape) + tuple(padding_mask.shape)
        ):
            raise ValueError(
                "`decoder_token_ids` and `decoder_padding_mask` must have the same shape; "
                f"got {tuple(token_ids.shape)} and {tuple(padding_mask.shape)}."
            )
        length = token_ids.shape[1]
        if length is not None and length > self.max_decoder_sequence_length:
            raise ValueError(
                f"`decoder_token_ids` has {length} tokens, more than this model's "
                f"max_decoder_sequence_length={self.max_decoder_sequence_length}."
            )
        dtype = keras.backend.standardize_dtype(getattr(token_ids, "dtype", "int32"))
        if "float" in dtype or dtype == "bool":
            raise ValueError(f"`decoder_token_ids` must hold integer token ids; got dtype {dtype}.")

    # --- Generation API: encoder once, cached decoder steps, tied logits. ---

    def encode(self, encoder_features, training=False):
        """Run the audio encoder.

        Args:
            encoder_features: `(batch, frames, num_mels)` log-mel features.

        Returns:
            `(batch, ceil(frames / 2), hidden_dim)`, after the final LayerNorm;
            equal to the model's `encoder_sequence_output`.
        """
        features = ops.cast(encoder_features, self.compute_dtype)
        return self._encode(features, training=training)

    def logits(self, decoder_sequence_output, transposed_embeddings=None, out_major=False):
        """Next-token logits (float32) from decoder outputs, via the tied embedding.

        Args:
            decoder_sequence_output: `(..., hidden_dim)`.
            transposed_embeddings: optional `(hidden_dim, vocabulary_size)`
                tensor, `transposed_token_embeddings()` computed once by a
                decoding loop: on CPU a vector-matrix product reads a table
                in this layout about twice as fast as the stored one.
            out_major: bool. Loops of several rows on CPUs (float32): the
                product is computed `(vocabulary, rows)` against the table as
                stored and transposed back (`layers.out_major_matmul`), so the
                logit rules and reductions after it still read
                `(rows, vocabulary)` in order. On a 2-core AVX-512 EPYC
                base's table takes 5.8-6.3 ms at 5 rows this way against
                7.7-8.1 as `x @ table.T`, 5.8 against 8.0 at 8 rows.

        Returns:
            `(..., vocabulary_size)` float32 logits, `hidden @ embeddings.T`,
            summed in float32 also in half precision (a bfloat16 result would
            round logits near 20 to steps of 0.125, enough to flip greedy
            choices).
        """
        if out_major:
            table = ops.convert_to_tensor(self.token_embedding.embeddings)
            return ops.cast(out_major_matmul(decoder_sequence_output, table), "float32")
        if transposed_embeddings is None:
            return self.token_embedding(decoder_sequence_output, reverse=True)
        x = ops.cast(decoder_sequence_output, self.compute_dtype)
        table = ops.cast(transposed_embeddings, self.compute_dtype)
        return matmul(x, table, "float32")

    def transposed_token_embeddings(self):
        """The token embedding table transposed, `(hidden_dim, vocabulary_size)`."""
        return ops.transpose(ops.convert_to_tensor(self.token_embedding.embeddings))

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.num_heads

    def cross_attention_cache(self, encoder_output):
        """Keys and values of every decoder layer's cross-attention, computed once.

        Args:
            encoder_output: `(batch, encoder_length, hidden_dim)`.

        Returns:
            A tuple with one `(keys, values)` pair per decoder layer, each
            `(batch, num_heads, encoder_length, head_dim)`.
            `decode_with_cache` accepts it for `batch * group` decoder rows
            (beams, samples): the `group` consecutive rows of one audio share
            its entry.
        """
        return tuple(
            layer.cross_attention.project_key_value(encoder_output, self.cache_dtype)
            for layer in self.decoder_transformer_layers
        )

    def cross_attention_scores(self, token_ids, cross_cache):
        """The decoder over whole token sequences, with every layer's cross-attention scores.

        What word-level timestamps align with (`keras_whisper.alignment`): one
        uncached pass, as OpenAI's `find_alignment` makes.

        Args:
            token_ids: `(batch, length)` int token ids.
            cross_cache: `cross_attention_cache(encoder_output)`.

        Returns:
            `(logits, scores)`: `(batch, length, vocabulary_size)` float32 logits,
            and a tuple with one `(batch, num_heads, length, encoder_length)`
            float32 array per decoder layer: the scaled scores before the softmax.
        """
        x = self.token_embedding(token_ids)
        x = self.decoder_position_embedding(self._stream(x))
        mask = self.decoder_attention_mask(ops.ones_like(token_ids))
        scores = []
        for layer, cache in zip(self.decoder_transformer_layers, cross_cache, strict=True):
            x, layer_scores = layer.call_with_cross_scores(x, cache, mask)
            scores.append(layer_scores)
        return self.logits(self.decoder_layer_norm(x)), tuple(scores)

    @property
    def cache_dtype(self) -> str:
        """The dtype of the decoding caches: the compute dtype, but float32 for bfloat16
        on JAX/CPU.

        There XLA multiplies a decoding step's attention (a few query rows against
        each cached head) in bfloat16 by first converting the whole cache to float32,
        every step: tiny.en's cross-attention at 8 rows took 1.6 ms a product in
        bfloat16 against 0.67 in float32. A float32 cache is converted once, when it
        is written.
        """
        return "float32" if float32_accumulation(self.compute_dtype) else self.compute_dtype

    def empty_self_attention_cache(self, batch_size: int, max_length: int | None = None):
        """A zero self-attention cache for `batch_size` sequences.

        Args:
            batch_size: int. Number of decoder rows.
            max_length: int. Number of positions; defaults to
                `max_decoder_sequence_length`.

        Returns:
            A tuple with one `(keys, values)` pair per decoder layer, each
            `(batch_size, num_heads, max_length, head_dim)` in `cache_dtype`.
        """
        max_length = self.max_decoder_sequence_length if max_length is None else max_length
        shape = (batch_size, self.num_heads, max_length, self.head_dim)
        dtype = self.cache_dtype
        return tuple(
            (ops.zeros(shape, dtype=dtype), ops.zeros(shape, dtype=dtype))
            for _ in self.decoder_transformer_layers
        )

    def step_weights(self, out_major: bool = False):
        """Each decoder layer's weights prepared for a decoding loop's steps.

        A decoding loop builds this once and passes it to every
        `decode_with_cache` call: each step then makes one self-attention
        projection product per layer instead of three, and with `out_major`
        multiplies every projection in the layout XLA runs fastest on CPUs for
        2-16 rows (see `WhisperDecoderBlock.step_weights`).

        Args:
            out_major: bool. Also keep every decoder projection's kernel
                transposed (a copy of the decoder's kernels).

        Returns:
            A tuple with one `StepWeights` per decoder layer, or `None` when the
            projections are quantized (`Model.quantize`): their kernels are then
            not plain matrices, and each step calls the layers.
        """
        weights = tuple(layer.step_weights(out_major) for layer in self.decoder_transformer_layers)
        return None if any(w is None for w in weights) else weights

    def decode_with_cache(
        self,
        token_ids,
        self_cache,
        cross_cache,
        cache_index,
        step_weights=None,
        out_major: bool = False,
        positions=None,
        cache_mask=None,
        prefix=None,
        output_index=None,
    ):
        """Decoder outputs for new tokens, reusing and extending the caches.

        The new tokens occupy positions `cache_index ... cache_index + n - 1`;
        each attends to every earlier position held in `self_cache` and to
        itself (causal). A whole prompt can be fed in one call, then one token
        per call.

        Args:
            token_ids: `(batch, n)` int token ids.
            self_cache: from `empty_self_attention_cache` or a previous call.
            cross_cache: from `cross_attention_cache`, for `batch` audios or for
                `batch / group` of them, each shared by `group` consecutive rows
                of `token_ids` (beam search).
            cache_index: int scalar (Python or tensor), the first new position.
            step_weights: optional `step_weights(out_major)`, computed once by
                the caller (a decoding loop); the same outputs, fewer or faster
                products.
            out_major: bool. Whether `step_weights` was built with `out_major`.
            positions: optional `(batch,)` int, each row's own position of its one
                new token (`n == 1`), for rows at different positions (a decoding
                pool). The token is still written to cache slot `cache_index`.
            cache_mask: with `positions`, `(batch, max_length)` bool: the cache
                slots each row attends to (its own earlier tokens).
            prefix: optional `(prefix_cache, prefix_length)`: earlier positions
                held once for each group of `group` consecutive rows, as
                `cross_cache` is (the prompt that a beam search's beams share:
                they then read it once, and reorder only their own positions).
                `prefix_cache` is a self-attention cache of `batch // group` rows
                whose first `prefix_length` (int scalar) positions are the
                sequence's first ones; `self_cache` then holds the positions from
                `prefix_length` on, position `p` in slot `p - prefix_length`.
            output_index: optional int scalar `i` (Python or tensor): return the
                output of new token `i` only, `(batch, 1, hidden_dim)`. The cache
                is the same; the last layer computes its attention and MLP for
                that token alone (a prompt of `n` tokens whose outputs but one
                are not read: about `1 / num_layers` of the work less).

        Returns:
            `(decoder_sequence_output, self_cache)`: `(batch, n, hidden_dim)`
            (`(batch, 1, hidden_dim)` with `output_index`) after the final
            LayerNorm, and the updated cache.
        """
        if prefix is not None and positions is not None:
            raise ValueError("`prefix` and `positions` cannot be combined.")
        x = self.token_embedding(token_ids)
        x = self.decoder_position_embedding(
            self._stream(x), start_index=cache_index, positions=positions
        )
        num_new = ops.shape(token_ids)[1]
        max_length = ops.shape(self_cache[0][0])[2]
        layers = self.decoder_transformer_layers
        prefix_cache, slot = (None,) * len(layers), cache_index
        if prefix is not None:
            prefix_cache, prefix_length = prefix
            slot = cache_index - prefix_length
            shared = ops.shape(prefix_cache[0][0])[2]
            prefix_mask = (ops.arange(shared) < prefix_length)[None, None, None, :]
            prefix_cache = [(k, v, prefix_mask) for k, v in prefix_cache]
        if cache_mask is None:
            # Cached positions before `cache_index`, and the new tokens causally.
            cache_mask = (ops.arange(max_length) < slot)[None, None, None, :]
        else:
            cache_mask = cache_mask[:, None, None, :]
        new_positions = ops.arange(num_new)
        new_mask = (new_positions[None, :] <= new_positions[:, None])[None, None, :, :]
        masks = (cache_mask, new_mask)
        step_weights = (None,) * len(layers) if step_weights is None else step_weights
        updated = []
        for i, (layer, layer_self, layer_cross, layer_step, layer_prefix) in enumerate(
            zip(layers, self_cache, cross_cache, step_weights, prefix_cache, strict=True)
        ):
            last = output_index is not None and i == len(layers) - 1
            if last:
                # The one new token's row of the causal mask.
                masks = (cache_mask, (new_positions <= output_index)[None, None, None, :])
            x, layer_self = layer.call_with_cache(
                x,
                layer_self,
                layer_cross,
                slot,
                masks,
                layer_step,
                out_major,
                layer_prefix,
                output_index if last else None,
            )
            updated.append(layer_self)
        return self.decoder_layer_norm(x), tuple(updated)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "num_mels": self.num_mels,
                "dropout": self.dropout,
                "max_encoder_sequence_length": self.max_encoder_sequence_length,
                "max_decoder_sequence_length": self.max_decoder_sequence_length,
                "num_decoder_layers": self.num_decoder_layers,
            }
        )
        return config


def _check_config(**config):
    for key in (
        "vocabulary_size",
        "num_layers",
        "num_decoder_layers",
        "num_heads",
        "hidden_dim",
        "intermediate_dim",
        "num_mels",
        "max_encoder_sequence_length",
        "max_decoder_sequence_length",
    ):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{key}` must be a positive integer; got {value!r}.")
    if config["hidden_dim"] % config["num_heads"]:
        raise ValueError(
            f"`hidden_dim` ({config['hidden_dim']}) must be divisible by `num_heads` "
            f"({config['num_heads']})."
        )
    if config["hidden_dim"] % 2:
        raise ValueError(
            f"`hidden_dim` must be even for the sinusoidal positions; got {config['hidden_dim']}."
        )
    if config["max_encoder_sequence_length"] < 2:
        raise ValueError("`max_encoder_sequence_length` must be at least 2 mel frames.")
    if not 0.0 <= float(config["dropout"]) < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1); got {config['dropout']!r}.")
