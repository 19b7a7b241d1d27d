"""The canonical checkpoint every converter reads into and writes from.

All foreign formats (CTranslate2, OpenAI `.pt`, Hugging Face transformers,
keras-hub presets) are converted to and from one intermediate: a flat dict of
NumPy arrays named exactly like OpenAI Whisper's `model_state_dict`, plus the
OpenAI `ModelDimensions`. This module defines that intermediate, the shapes it
must have for a given config, and its validation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from keras_whisper.errors import WeightsError

StateDict = dict[str, np.ndarray]

_UMASK = os.umask(0o022)
os.umask(_UMASK)

_DIM_FIELDS = (
    "n_mels",
    "n_audio_ctx",
    "n_audio_state",
    "n_audio_head",
    "n_audio_layer",
    "n_vocab",
    "n_text_ctx",
    "n_text_state",
    "n_text_head",
    "n_text_layer",
)

# How many names of each kind of problem an error message lists before "...".
_MAX_LISTED = 8


@dataclasses.dataclass(frozen=True)
class ModelDimensions:
    """The hyperparameters of a Whisper model, with OpenAI's field names.

    Args:
        n_mels: int. Number of mel bins of the input features (80; 128 for
            large-v3 and turbo).
        n_audio_ctx: int. Number of encoder positions (1500 for 30 s).
        n_audio_state: int. Encoder hidden size.
        n_audio_head: int. Encoder attention heads.
        n_audio_layer: int. Encoder blocks.
        n_vocab: int. Vocabulary size (51864 English-only, 51865
            multilingual, 51866 large-v3).
        n_text_ctx: int. Number of decoder positions (448).
        n_text_state: int. Decoder hidden size.
        n_text_head: int. Decoder attention heads.
        n_text_layer: int. Decoder blocks.

    Examples:
    ```python
    dims = ModelDimensions(80, 1500, 384, 6, 4, 51864, 448, 384, 6, 4)
    dims.to_dict()["n_audio_state"]  # 384
    ModelDimensions.from_dict(dims.to_dict()) == dims  # True
    ```
    """

    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int

    def __post_init__(self) -> None:
        for field in _DIM_FIELDS:
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise WeightsError(
                    f"ModelDimensions.{field} must be an integer, got {value!r} "
                    f"({type(value).__name__}). Check the config the dimensions came from."
                )
            if value <= 0:
                raise WeightsError(
                    f"ModelDimensions.{field} must be positive, got {value}. "
                    "Check the config the dimensions came from."
                )
            object.__setattr__(self, field, int(value))
        for state, head in (("n_audio_state", "n_audio_head"), ("n_text_state", "n_text_head")):
            if getattr(self, state) % getattr(self, head):
                raise WeightsError(
                    f"ModelDimensions.{state}={getattr(self, state)} is not divisible by "
                    f"{head}={getattr(self, head)}: attention heads would have a fractional "
                    "size. Check the head counts of the config."
                )

    def to_dict(self) -> dict[str, int]:
        """Returns the dimensions as a plain dict, OpenAI's `checkpoint["dims"]`."""
        return {field: getattr(self, field) for field in _DIM_FIELDS}

    @classmethod
    def from_dict(cls, config: Mapping[str, int]) -> ModelDimensions:
        """Builds dimensions from a dict with exactly OpenAI's ten field names.

        Args:
            config: A mapping such as OpenAI's `checkpoint["dims"]`.

        Returns:
            A `ModelDimensions`.

        Raises:
            WeightsError: if a field is missing, unknown or not a positive int.
        """
        missing = [field for field in _DIM_FIELDS if field not in config]
        unknown = sorted(str(key) for key in config if key not in _DIM_FIELDS)
        if missing or unknown:
            raise WeightsError(
                "The Whisper dimensions dict does not have OpenAI's ModelDimensions fields: "
                f"missing {missing}, unknown {unknown}. Expected exactly {list(_DIM_FIELDS)}."
            )
        return cls(**{field: config[field] for field in _DIM_FIELDS})


def _attention_shapes(prefix: str, n: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.query.weight": (n, n),
        f"{prefix}.query.bias": (n,),
        f"{prefix}.key.weight": (n, n),
        f"{prefix}.value.weight": (n, n),
        f"{prefix}.value.bias": (n,),
        f"{prefix}.out.weight": (n, n),
        f"{prefix}.out.bias": (n,),
    }


def _block_shapes(
    prefix: str, n: int, cross_attention: bool, intermediate: int | None = None
) -> dict[str, tuple[int, ...]]:
    m = intermediate or 4 * n
    shapes = _attention_shapes(f"{prefix}.attn", n)
    shapes.update({f"{prefix}.attn_ln.weight": (n,), f"{prefix}.attn_ln.bias": (n,)})
    if cross_attention:
        shapes.update(_attention_shapes(f"{prefix}.cross_attn", n))
        shapes.update(
            {f"{prefix}.cross_attn_ln.weight": (n,), f"{prefix}.cross_attn_ln.bias": (n,)}
        )
    shapes.update(
        {
            f"{prefix}.mlp.0.weight": (m, n),
            f"{prefix}.mlp.0.bias": (m,),
            f"{prefix}.mlp.2.weight": (n, m),
            f"{prefix}.mlp.2.bias": (n,),
            f"{prefix}.mlp_ln.weight": (n,),
            f"{prefix}.mlp_ln.bias": (n,),
        }
    )
    return shapes


def expected_shapes(
    dims: ModelDimensions, intermediate: int | None = None
) -> dict[str, tuple[int, ...]]:
    """Returns the name and shape of every tensor of an OpenAI Whisper state dict.

    The order is the order of OpenAI's `model.state_dict()`, and includes the
    encoder's sinusoidal `encoder.positional_embedding` buffer. OpenAI's MLPs
    are 4x the hidden size and the key projections have no bias.

    Args:
        dims: The model's `ModelDimensions`.
        intermediate: The MLPs' width when it is not 4x the hidden size (keras-hub's
            `WhisperBackbone` takes any `intermediate_dim`).

    Returns:
        A dict from OpenAI tensor name to shape tuple.

    Examples:
    ```python
    shapes = expected_shapes(dims)
    shapes["encoder.conv1.weight"]  # (n_audio_state, n_mels, 3)
    ```
    """
    a, t = dims.n_audio_state, dims.n_text_state
    shapes: dict[str, tuple[int, ...]] = {
        "encoder.positional_embedding": (dims.n_audio_ctx, a),
        "encoder.conv1.weight": (a, dims.n_mels, 3),
        "encoder.conv1.bias": (a,),
        "encoder.conv2.weight": (a, a, 3),
        "encoder.conv2.bias": (a,),
    }
    for i in range(dims.n_audio_layer):
        shapes.update(_block_shapes(f"encoder.blocks.{i}", a, False, intermediate))
    shapes.update({"encoder.ln_post.weight": (a,), "encoder.ln_post.bias": (a,)})
    shapes.update(
        {
            "decoder.positional_embedding": (dims.n_text_ctx, t),
            "decoder.token_embedding.weight": (dims.n_vocab, t),
        }
    )
    for i in range(dims.n_text_layer):
        shapes.update(_block_shapes(f"decoder.blocks.{i}", t, True, intermediate))
    shapes.update({"decoder.ln.weight": (t,), "decoder.ln.bias": (t,)})
    return shapes


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    if len(names) > _MAX_LISTED:
        shown += f", ... ({len(names) - _MAX_LISTED} more)"
    return shown


def validate_state_dict(
    dims: ModelDimensions,
    state_dict: Mapping[str, np.ndarray],
    source: str,
    intermediate: int | None = None,
) -> None:
    """Checks that a state dict is a complete, finite Whisper of the given size.

    Args:
        dims: The `ModelDimensions` the weights must fit.
        state_dict: OpenAI-named arrays (NumPy or anything `np.asarray` takes).
        source: What the weights were read from (a path, say); it starts every
            error message.
        intermediate: The MLPs' width, when it is not 4x the hidden size.

    Raises:
        WeightsError: naming the tensors that are missing, unexpected, of the
            wrong shape or dtype, or that contain NaN or infinite values.
    """
    shapes = expected_shapes(dims, intermediate)
    missing = [name for name in shapes if name not in state_dict]
    unexpected = sorted(name for name in state_dict if name not in shapes)
    wrong = []
    for name, shape in shapes.items():
        if name in state_dict:
            actual = tuple(np.shape(state_dict[name]))
            if actual != shape:
                wrong.append(f"{name}: expected {shape}, found {actual}")
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensor(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s): {_listing(unexpected)}")
    if wrong:
        problems.append(f"{len(wrong)} shape mismatch(es): {_listing(wrong)}")
    if problems:
        raise WeightsError(
            f"{source}: the weights do not fit the Whisper config {dims.to_dict()}: "
            + "; ".join(problems)
            + ". Make sure the config belongs to these weights (same model size and "
            "vocabulary) and that the checkpoint is a complete Whisper model."
        )
    for name in shapes:
        array = np.asarray(state_dict[name])
        if not np.issubdtype(array.dtype, np.floating) and array.dtype.name != "bfloat16":
            raise WeightsError(
                f"{source}: tensor '{name}' has dtype {array.dtype}; Whisper weights must be "
                "floating point. Quantized weights must be dequantized before use."
            )
        if not np.isfinite(array).all():
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            raise WeightsError(
                f"{source}: tensor '{name}' {array.shape} contains {bad} NaN or infinite "
                "value(s). The checkpoint is corrupt or was saved from a diverged model; "
                "re-download or re-export it."
            )


def dims_from_state_dict(
    state_dict: Mapping[str, np.ndarray], n_audio_head: int, n_text_head: int
) -> ModelDimensions:
    """Derives `ModelDimensions` from the tensor shapes of an OpenAI state dict.

    Head counts are not recoverable from shapes, so they are passed in.

    Args:
        state_dict: OpenAI-named arrays.
        n_audio_head: Encoder attention heads.
        n_text_head: Decoder attention heads.

    Returns:
        The `ModelDimensions` the tensors imply.

    Raises:
        WeightsError: if a tensor needed to read a dimension is missing.
    """
    needed = (
        "encoder.conv1.weight",
        "encoder.positional_embedding",
        "decoder.token_embedding.weight",
        "decoder.positional_embedding",
    )
    missing = [name for name in needed if name not in state_dict]
    if missing:
        raise WeightsError(
            f"Cannot derive the Whisper dimensions: missing tensor(s) {missing}. "
            "The checkpoint is incomplete or is not a Whisper model."
        )

    def count_layers(stack: str) -> int:
        pattern = re.compile(rf"^{stack}\.blocks\.(\d+)\.")
        indices = {int(m.group(1)) for name in state_dict if (m := pattern.match(name))}
        return max(indices) + 1 if indices else 0

    conv1 = np.shape(state_dict["encoder.conv1.weight"])
    token = np.shape(state_dict["decoder.token_embedding.weight"])
    return ModelDimensions(
        n_mels=conv1[1],
        n_audio_ctx=np.shape(state_dict["encoder.positional_embedding"])[0],
        n_audio_state=conv1[0],
        n_audio_head=n_audio_head,
        n_audio_layer=count_layers("encoder"),
        n_vocab=token[0],
        n_text_ctx=np.shape(state_dict["decoder.positional_embedding"])[0],
        n_text_state=token[1],
        n_text_head=n_text_head,
        n_text_layer=count_layers("decoder"),
    )


def ordered_state_dict(dims: ModelDimensions, state_dict: Mapping[str, np.ndarray]) -> StateDict:
    """Returns the state dict's known tensors in OpenAI's order, then any others.

    Args:
        dims: The model's `ModelDimensions`.
        state_dict: OpenAI-named arrays.

    Returns:
        A new dict with the same arrays (not copied).
    """
    shapes = expected_shapes(dims)
    ordered = {name: state_dict[name] for name in shapes if name in state_dict}
    ordered.update({name: value for name, value in state_dict.items() if name not in shapes})
    return ordered


def count_parameters(state_dict: Mapping[str, np.ndarray], include_buffers: bool = False) -> int:
    """Counts elements the way OpenAI's `sum(p.numel() for p in model.parameters())` does.

    Args:
        state_dict: OpenAI-named arrays.
        include_buffers: Whether to count the encoder's sinusoidal
            `encoder.positional_embedding` buffer too.

    Returns:
        The number of scalar weights.
    """
    return sum(
        int(np.size(value))
        for name, value in state_dict.items()
        if include_buffers or name != "encoder.positional_embedding"
    )


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[str]:
    """A temporary path beside `path` that replaces it when the block ends without error.

    The checkpoint writers write there, so an interrupted write never leaves a
    truncated file under the final name (nor replaces the user's old one). The file
    gets the permissions a new file would (`0o666` less the umask), not
    `mkstemp`'s private `0o600`.

    Args:
        path: the file to write.

    Yields:
        The temporary file's path (an empty file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~_UMASK)  # whatever the writer created it with
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
