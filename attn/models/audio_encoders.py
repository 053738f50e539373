"""Audio front-ends: features ``[B, frames, bins]`` with real lengths ``[B]`` -> encoder steps
``[B, S, D]`` with their validity ``[B, S]``, ``S = ceil(frames / frame_stride)``.

Step ``s`` stands for input frames ``[s * frame_stride, (s + 1) * frame_stride)``, so attention
over steps can be drawn above the spectrogram. A step is real iff it starts at a real frame;
what a real step computes never depends on the values of padded frames.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

import attn
from attn.models.recurrent import BidirectionalEncoder
from attn.nn.dropout import Dropout, maybe_active

__all__ = ["ConvSubsampler", "PyramidalListener", "frame_validity"]

Array = jax.Array


def frame_validity(lengths_b: Array, num_frames: int) -> Array:
    """bool ``[B, num_frames]``: frame ``t`` of example ``b`` is real iff ``t < lengths[b]``."""
    return jnp.arange(num_frames) < lengths_b[:, None]


def _halved(lengths_b: Array) -> Array:
    """Real steps after pairing frames (a last odd frame still makes a step)."""
    return (lengths_b + 1) // 2


class PyramidalListener(nnx.Module):
    """LAS's listener (Chan et al. 2016): a bidirectional RNN over the frames, then
    ``pyramid_layers`` bidirectional RNNs each reading adjacent pairs of the layer below
    concatenated, so time shrinks by ``frame_stride = 2 ** pyramid_layers``.

    ``(features [B, T, F], lengths [B])`` -> ``(states [B, S, H], valid [B, S])``; every RNN
    skips padding (its states there are 0), ``H = features`` (both directions).
    """

    def __init__(
        self,
        cell: str,
        in_features: int,
        features: int,
        pyramid_layers: int,
        *,
        dtype: Any,
        rngs: nnx.Rngs,
    ):
        self.frame_stride = 2**pyramid_layers
        self.bottom = BidirectionalEncoder(cell, in_features, features, dtype=dtype, rngs=rngs)
        self.pyramid = nnx.List(
            [
                BidirectionalEncoder(cell, 2 * features, features, dtype=dtype, rngs=rngs)
                for _ in range(pyramid_layers)
            ]
        )

    def __call__(self, features_btf: Array, lengths_b: Array) -> tuple[Array, Array]:
        valid_bt = frame_validity(lengths_b, features_btf.shape[1])
        states_bth, _ = self.bottom(features_btf, valid_bt)
        for layer in self.pyramid:
            B, T, H = states_bth.shape
            pairs_bth = jnp.pad(states_bth, ((0, 0), (0, T % 2), (0, 0)))
            lengths_b = _halved(lengths_b)
            valid_bt = frame_validity(lengths_b, (T + 1) // 2)
            states_bth, _ = layer(pairs_bth.reshape(B, (T + 1) // 2, 2 * H), valid_bt)
        return states_bth, valid_bt


class ConvSubsampler(nnx.Module):
    """Speech-Transformer's front-end (Dong et al. 2018, as in ESPnet): two 3x3 convolutions of
    stride 2 over (time, bins) with ReLU, flattened per step and projected to ``features``,
    then positions and dropout; ``frame_stride = 4``.

    ``(features [B, T, F], lengths [B])`` -> ``(x [B, S, D], valid [B, S])``. Padded frames and
    steps are zeroed before each convolution, so real steps see zeros, never padded values.
    ``positional``: ``"sinusoidal"`` and ``"learned"`` (a table of ``S`` rows) are added here;
    any other scheme adds nothing (``"rope"``, ``"alibi"``, ``"t5"`` act inside attention).
    """

    frame_stride = 4

    def __init__(
        self,
        audio_shape: tuple[int, int],
        channels: int,
        features: int,
        *,
        positional: str,
        dropout_rate: float | Array = 0.0,
        dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        frames, bins = audio_shape
        conv = dict(kernel_size=(3, 3), strides=(2, 2), padding="SAME", dtype=dtype, rngs=rngs)
        self.first = nnx.Conv(1, channels, **conv)
        self.second = nnx.Conv(channels, channels, **conv)
        self.project = nnx.Linear(-(-bins // 4) * channels, features, dtype=dtype, rngs=rngs)
        self.positional, self.dtype = positional, dtype
        if positional == "learned":
            steps = -(-frames // 4)
            self.table = nnx.Param(nnx.initializers.normal(1.0)(rngs.params(), (steps, features)))
        else:
            self.table = nnx.data(None)
        self.dropout = Dropout(dropout_rate, rngs=rngs if maybe_active(dropout_rate) else None)

    def __call__(
        self, features_btf: Array, lengths_b: Array, *, deterministic: bool | None = None
    ) -> tuple[Array, Array]:
        x = features_btf[..., None]  # [B, T, F, 1]: time and bins are the image's sides
        for conv in (self.first, self.second):
            x = x * frame_validity(lengths_b, x.shape[1])[:, :, None, None].astype(x.dtype)
            x = jax.nn.relu(conv(x))
            lengths_b = _halved(lengths_b)
        valid_bs = frame_validity(lengths_b, x.shape[1])
        x_bsd = self.project(x.reshape(*x.shape[:2], -1))
        S, D = x_bsd.shape[1:]
        if self.positional == "sinusoidal":
            x_bsd = x_bsd + attn.positional.sinusoidal(jnp.arange(S), D)
        elif self.positional == "learned":
            x_bsd = x_bsd + self.table[...]
        x_bsd = x_bsd.astype(self.dtype or x_bsd.dtype)
        return self.dropout(x_bsd, deterministic=deterministic), valid_bs
