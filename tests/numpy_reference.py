"""An independent float64 NumPy forward pass of OpenAI Whisper, for tests.

Written from the architecture description (OpenAI's `model.py` semantics:
linear weights `(out, in)`, conv weights `(out, in, kernel)`, q and k each
scaled by `head_dim ** -0.25`), reading an OpenAI-named state dict. It shares
no code with keras_whisper.
"""

from __future__ import annotations

import math

import numpy as np

_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def layer_norm(x, prefix, sd):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * sd[f"{prefix}.weight"] + sd[f"{prefix}.bias"]


def linear(x, prefix, sd, bias=True):
    y = x @ sd[f"{prefix}.weight"].T
    return y + sd[f"{prefix}.bias"] if bias else y


def conv1d(x, prefix, sd, stride):
    """x: (batch, T, C_in); weight (C_out, C_in, 3); padding 1."""
    w, b = sd[f"{prefix}.weight"], sd[f"{prefix}.bias"]
    padded = np.pad(x, ((0, 0), (1, 1), (0, 0)))
    length = (x.shape[1] + 2 - 3) // stride + 1
    out = np.zeros((x.shape[0], length, w.shape[0]))
    for t in range(length):
        window = padded[:, t * stride : t * stride + 3, :]  # (B, 3, C_in)
        out[:, t] = np.einsum("bki,oik->bo", window, w)
    return out + b


def attention(x, xa, prefix, sd, num_heads, mask=None):
    q = linear(x, f"{prefix}.query", sd)
    k = linear(xa, f"{prefix}.key", sd, bias=False)
    v = linear(xa, f"{prefix}.value", sd)
    batch, tq, d = q.shape
    hd = d // num_heads
    scale = hd**-0.25
    q = q.reshape(batch, tq, num_heads, hd).transpose(0, 2, 1, 3) * scale
    k = k.reshape(batch, -1, num_heads, hd).transpose(0, 2, 3, 1) * scale
    v = v.reshape(batch, -1, num_heads, hd).transpose(0, 2, 1, 3)
    scores = q @ k
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    scores = scores - scores.max(-1, keepdims=True)
    weights = np.exp(scores)
    weights /= weights.sum(-1, keepdims=True)
    out = (weights @ v).transpose(0, 2, 1, 3).reshape(batch, tq, d)
    return linear(out, f"{prefix}.out", sd)


def encode(mel, sd, num_heads):
    """mel: (batch, frames, n_mels) -> (batch, ceil(frames / 2), d)."""
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    x = gelu(conv1d(np.asarray(mel, np.float64), "encoder.conv1", sd, 1))
    x = gelu(conv1d(x, "encoder.conv2", sd, 2))
    x = x + sd["encoder.positional_embedding"][: x.shape[1]]
    i = 0
    while f"encoder.blocks.{i}.attn.query.weight" in sd:
        p = f"encoder.blocks.{i}"
        h = layer_norm(x, f"{p}.attn_ln", sd)
        x = x + attention(h, h, f"{p}.attn", sd, num_heads)
        h = layer_norm(x, f"{p}.mlp_ln", sd)
        x = x + linear(gelu(linear(h, f"{p}.mlp.0", sd)), f"{p}.mlp.2", sd)
        i += 1
    return layer_norm(x, "encoder.ln_post", sd)


def decode(tokens, audio_features, sd, num_heads, padding_mask=None):
    """tokens: (batch, T) -> hidden states (batch, T, d) after the final LN."""
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    tokens = np.asarray(tokens)
    length = tokens.shape[1]
    x = sd["decoder.token_embedding.weight"][tokens] + sd["decoder.positional_embedding"][:length]
    mask = np.tril(np.ones((length, length), bool))[None, None]
    if padding_mask is not None:
        mask = mask & np.asarray(padding_mask, bool)[:, None, None, :]
    xa = np.asarray(audio_features, np.float64)
    i = 0
    while f"decoder.blocks.{i}.attn.query.weight" in sd:
        p = f"decoder.blocks.{i}"
        h = layer_norm(x, f"{p}.attn_ln", sd)
        x = x + attention(h, h, f"{p}.attn", sd, num_heads, mask)
        h = layer_norm(x, f"{p}.cross_attn_ln", sd)
        x = x + attention(h, xa, f"{p}.cross_attn", sd, num_heads)
        h = layer_norm(x, f"{p}.mlp_ln", sd)
        x = x + linear(gelu(linear(h, f"{p}.mlp.0", sd)), f"{p}.mlp.2", sd)
        i += 1
    return layer_norm(x, "decoder.ln", sd)


def logits(hidden, sd):
    return (
        np.asarray(hidden, np.float64)
        @ np.asarray(sd["decoder.token_embedding.weight"], np.float64).T
    )
