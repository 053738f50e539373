"""Image front-ends: images ``[B, H, W, C]`` -> a grid of region vectors ``[B, P, D]``.

Both keep the grid in row-major order and say where each region sits (``grid_shape`` and
``cell_size``: region ``p`` covers pixel rows ``(p // gw) * ch ...`` and columns
``(p % gw) * cw ...``), so attention over regions can be drawn on the image and scored
against object masks.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

import attn
from attn.nn.dropout import Dropout, maybe_active

__all__ = ["ConvGrid", "GridPositions", "PatchEmbedder", "check_patch_size"]

Array = jax.Array


def check_patch_size(image_shape: tuple[int, int, int], patch_size: int, key: str) -> None:
    """``ValueError`` naming ``key`` unless ``patch_size`` divides the image's height and width."""
    height, width, _ = image_shape
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"{key}={patch_size} must divide the image's height and width {height}x{width}"
        )


class GridPositions(nnx.Module):
    """Positions of a row-major region grid added to ``[B, extra + P, D]``: ``"learned"`` (a
    table with a row per token, the ``extra`` leading ones included), ``"sinusoidal"`` (2-D,
    :func:`attn.positional.sinusoidal_2d`, on the regions only); any other scheme adds nothing
    here (``"rope"``, ``"alibi"``, ``"t5"`` act inside attention over the row-major order)."""

    def __init__(
        self,
        grid_shape: tuple[int, int],
        features: int,
        positional: str,
        *,
        extra_tokens: int = 0,
        rngs: nnx.Rngs,
    ):
        self.grid_shape, self.positional, self.extra_tokens = grid_shape, positional, extra_tokens
        if positional == "learned":
            count = grid_shape[0] * grid_shape[1] + extra_tokens
            self.table = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (count, features)))
        else:
            self.table = nnx.data(None)

    def __call__(self, x_btd: Array) -> Array:
        if self.positional == "learned":
            return x_btd + self.table[...].astype(x_btd.dtype)
        if self.positional == "sinusoidal":
            codes = attn.positional.sinusoidal_2d(*self.grid_shape, x_btd.shape[-1])
            codes = jnp.pad(codes, ((self.extra_tokens, 0), (0, 0)))
            return x_btd + codes.astype(x_btd.dtype)
        return x_btd


class PatchEmbedder(nnx.Module):
    """ViT's input: non-overlapping ``patch_size`` squares, flattened and projected to
    ``features`` (a stride-``patch_size`` convolution), plus positions, then dropout.

    ``positional``: ``"learned"`` (a table, one row per patch and CLS), ``"sinusoidal"`` (2-D,
    :func:`attn.positional.sinusoidal_2d`); any other scheme adds nothing here (``"rope"``,
    ``"alibi"``, ``"t5"`` act inside attention over the row-major patch order). With
    ``cls_token`` a learned ``[CLS]`` vector is prepended (output ``[B, 1 + P, D]``).
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        patch_size: int,
        features: int,
        *,
        positional: str,
        cls_token: bool = False,
        dropout_rate: float | Array = 0.0,
        dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        check_patch_size(image_shape, patch_size, "model.patch_size")
        height, width, channels = image_shape
        self.grid_shape = (height // patch_size, width // patch_size)
        self.cell_size = (patch_size, patch_size)
        self.patch_size = patch_size
        self.dtype = dtype
        self.project = nnx.Linear(
            patch_size * patch_size * channels, features, dtype=dtype, rngs=rngs
        )
        init = nnx.initializers.normal(stddev=0.02)
        self.cls = nnx.Param(init(rngs.params(), (1, 1, features))) if cls_token else nnx.data(None)
        self.positions = GridPositions(
            self.grid_shape, features, positional, extra_tokens=int(cls_token), rngs=rngs
        )
        self.dropout = Dropout(dropout_rate, rngs=rngs if maybe_active(dropout_rate) else None)

    def patches(self, images_bhwc: Array) -> Array:
        """Flattened patches ``[B, P, p * p * C]`` in row-major grid order."""
        B, H, W, C = images_bhwc.shape
        p = self.patch_size
        x = images_bhwc.reshape(B, H // p, p, W // p, p, C).transpose(0, 1, 3, 2, 4, 5)
        return x.reshape(B, (H // p) * (W // p), p * p * C)

    def __call__(self, images_bhwc: Array, *, deterministic: bool | None = None) -> Array:
        x_bpd = self.project(self.patches(images_bhwc).astype(self.dtype or jnp.float32))
        if self.cls is not None:
            cls_b1d = jnp.broadcast_to(self.cls[...], (x_bpd.shape[0], 1, x_bpd.shape[-1]))
            x_bpd = jnp.concatenate([cls_b1d.astype(x_bpd.dtype), x_bpd], axis=1)
        x_bpd = self.positions(x_bpd).astype(self.dtype or x_bpd.dtype)
        return self.dropout(x_bpd, deterministic=deterministic)


class ConvGrid(nnx.Module):
    """A small CNN (Show, Attend and Tell's "annotation vectors"): ``num_downsamples`` blocks
    of a 3x3 convolution, ReLU and a stride-2 3x3 convolution, then a 1x1 projection to
    ``features``: ``[B, H, W, C] -> [B, (H / 2^n) * (W / 2^n), features]``."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        features: int,
        *,
        channels: int = 32,
        num_downsamples: int = 2,
        dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        check_patch_size(image_shape, 2**num_downsamples, "2**model.num_downsamples")
        height, width, in_channels = image_shape
        cell = 2**num_downsamples
        self.grid_shape = (height // cell, width // cell)
        self.cell_size = (cell, cell)
        self.dtype = dtype
        convs = []
        for block in range(num_downsamples):
            width_in = in_channels if block == 0 else channels * 2 ** (block - 1)
            width_out = channels * 2**block
            convs.append(nnx.Conv(width_in, width_out, (3, 3), dtype=dtype, rngs=rngs))
            convs.append(nnx.Conv(width_out, width_out, (3, 3), strides=2, dtype=dtype, rngs=rngs))
        self.convs = nnx.List(convs)
        last = channels * 2 ** (num_downsamples - 1) if num_downsamples else in_channels
        self.project = nnx.Linear(last, features, dtype=dtype, rngs=rngs)

    def __call__(self, images_bhwc: Array) -> Array:
        x = images_bhwc.astype(self.dtype or jnp.float32)
        for conv in self.convs:
            x = jax.nn.relu(conv(x))
        B, gh, gw, D = x.shape
        return self.project(x.reshape(B, gh * gw, D))
