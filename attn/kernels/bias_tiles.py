"""Dense bias arrays in the tiled kernels, read one tile at a time.

A bias broadcastable to ``[B, N, T, S]`` (shape ``[B | 1, N | 1, T | 1, S | 1]``) is never
copied or padded: each tile pair slices its ``[q_tile, kv_tile]`` window out of the T and S
axes it has (broadcast axes are read whole), and the backward pass adds the tile's gradient
back at the same place, summed over the broadcast axes as autodiff of ``logits + bias`` would.

When a length is not a multiple of its tile, the last tile's window would run past the end:
it is read from ``length - tile`` instead (``lax.dynamic_slice`` clamps there anyway) and
rolled into place, so its real rows are right and its padding rows hold other finite bias
values, which the kernel masks (keys) or drops (queries) and whose gradient is zero.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["Window", "add", "arrange", "check", "read", "window"]

Array = jax.Array

# Per axis (T, then S): the start actually read (clamped), the size read, and how far the tile
# starts past it (None when it never does: whole tiles, or a broadcast axis read whole).
Window = tuple[tuple[Any, int, Any], tuple[Any, int, Any]]


def check(bias: Any, shape: tuple[int, int, int, int]) -> Array:
    """``bias`` as a float array broadcastable to ``shape = (B, N, T, S)``, or an error naming
    the shapes."""
    bias = jnp.asarray(bias)
    if not jnp.issubdtype(bias.dtype, jnp.floating):
        raise TypeError(f"bias must be a float array, got dtype {bias.dtype}")
    if bias.ndim > 4 or any(
        b not in (1, s) for b, s in zip(bias.shape[::-1], shape[::-1], strict=False)
    ):
        raise ValueError(f"bias of shape {bias.shape} does not broadcast to [B, N, T, S] = {shape}")
    return bias


def _axis(length: int, start: Array, size: int) -> tuple[Any, int, Any]:
    if length == 1:
        return 0, 1, None
    if length % size == 0:  # tiles start at multiples of size: never past the end
        return start, size, None
    clamped = jnp.minimum(start, length - size)
    return clamped, size, start - clamped


def window(
    bias_shape: tuple[int, ...], q_start: Array, q_tile: int, kv_start: Array, kv_tile: int
) -> Window:
    """Where the tile of queries ``q_start + [0, q_tile)`` and keys ``kv_start + [0, kv_tile)``
    sits in a rank-4 bias of ``bias_shape`` (``q_tile <= T`` and ``kv_tile <= S``)."""
    return _axis(bias_shape[2], q_start, q_tile), _axis(bias_shape[3], kv_start, kv_tile)


def read(bias: Array, where: Window) -> Array:
    """The window ``[B | 1, N | 1, q_tile | 1, kv_tile | 1]`` as stored (see :func:`arrange`)."""
    (t0, t_size, _), (s0, s_size, _) = where
    return lax.dynamic_slice(bias, (0, 0, t0, s0), (*bias.shape[:2], t_size, s_size))


def arrange(piece: Array, where: Window) -> Array:
    """A window from :func:`read` with row ``r`` (column ``c``) holding the tile's query
    ``q_start + r`` (key ``kv_start + c``); only the last tile of a ragged length moves."""
    for axis, (_, _, shift) in zip((2, 3), where, strict=True):
        if shift is not None:
            piece = lax.cond(
                shift == 0,
                lambda p: p,
                lambda p, axis=axis, shift=shift: jnp.roll(p, -shift, axis),
                piece,
            )
    return piece


def add(total: Array, piece: Array, where: Window) -> Array:
    """``total`` (a bias-shaped gradient) plus ``piece``, a gradient of :func:`read`'s window."""
    (t0, _, _), (s0, _, _) = where
    return lax.dynamic_update_slice(total, read(total, where) + piece, (0, 0, t0, s0))
