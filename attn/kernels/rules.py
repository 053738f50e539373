"""Evaluate elementwise rules ``rule(b, h, q_idx, kv_idx)`` (masks and score biases) on index grids.

Two layouts: the whole ``[B, N, T, S]`` grid (dense attention) and one tile in the chunked
kernel's layout ``[B * K, q_tile * G, kv_tile]`` with ``N = K * G``. Rules see the documented
rank-4 indices in both cases, so one rule serves every implementation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Rule = Callable[[Any, Any, Any, Any], Any]

__all__ = [
    "Rebuild",
    "dense_values",
    "is_traceable",
    "kernel_layout",
    "partition",
    "program_layout",
    "program_tile_values",
    "tile_values",
]


def _rank4(values: Any) -> jax.Array:
    values = jnp.asarray(values)
    if values.ndim > 4:
        raise ValueError(f"a rule must return rank <= 4 ([B, N, T, S]), got {values.shape}")
    return values.reshape((1,) * (4 - values.ndim) + values.shape)


def dense_values(rule: Rule, shape: tuple[int, int, int, int]) -> jax.Array:
    """``rule`` on the full grid: an array broadcastable to ``shape = (B, N, T, S)``, rank 4."""
    B, N, T, S = shape
    return _rank4(
        rule(
            np.arange(B).reshape(B, 1, 1, 1),
            np.arange(N).reshape(1, N, 1, 1),
            np.arange(T).reshape(1, 1, T, 1),
            np.arange(S).reshape(1, 1, 1, S),
        )
    )


def tile_values(
    rule: Rule,
    batch: int,
    num_heads: int,
    num_kv_heads: int,
    q_start: jax.Array,
    q_tile: int,
    kv_start: jax.Array,
    kv_tile: int,
) -> jax.Array:
    """``rule`` on one tile, in the chunked kernel's layout (see :func:`kernel_layout`).

    ``q_start`` and ``kv_start`` are the (traced) first indices of the tile.
    """
    values = _rank4(
        rule(
            np.arange(batch).reshape(batch, 1, 1, 1),
            np.arange(num_heads).reshape(1, num_heads, 1, 1),
            (q_start + jnp.arange(q_tile, dtype=jnp.int32)).reshape(1, 1, q_tile, 1),
            (kv_start + jnp.arange(kv_tile, dtype=jnp.int32)).reshape(1, 1, 1, kv_tile),
        )
    )
    return kernel_layout(values, batch, num_heads, num_kv_heads, q_tile, kv_tile)


def kernel_layout(
    values: jax.Array, batch: int, num_heads: int, num_kv_heads: int, q_tile: int, kv_tile: int
) -> jax.Array:
    """A tile's values ``[B | 1, N | 1, q_tile | 1, kv_tile | 1]`` in the chunked kernel's
    layout ``[B * K, q_tile * G, kv_tile]`` (query head ``n = k * G + g``; row ``t * G + g``),
    or ``[1, q_tile * G, kv_tile]`` when they depend on neither example nor head."""
    G = num_heads // num_kv_heads
    if values.shape[:2] == (1, 1):
        # The same for every example and head (causal, windows): stay broadcastable over the
        # first axis, so the kernel fuses the comparison instead of reading a full-tile array.
        values = jnp.broadcast_to(values[0, 0, :, None, :], (q_tile, G, kv_tile))
        return values.reshape(1, q_tile * G, kv_tile)
    values = jnp.broadcast_to(values, (batch, num_heads, q_tile, kv_tile))
    values = values.reshape(batch, num_kv_heads, G, q_tile, kv_tile).transpose(0, 1, 3, 2, 4)
    return values.reshape(batch * num_kv_heads, q_tile * G, kv_tile)


def program_tile_values(
    rule: Rule,
    num_heads: int,
    num_kv_heads: int,
    batch_index: jax.Array,
    kv_head: jax.Array,
    q_start: jax.Array,
    q_tile: int,
    kv_start: jax.Array,
    kv_tile: int,
) -> jax.Array:
    """``rule`` on one tile of one example and key head (a Pallas program's share), in the
    layout of :func:`program_layout`."""
    G = num_heads // num_kv_heads
    values = _rank4(
        rule(
            jnp.reshape(batch_index, (1, 1, 1, 1)),
            (kv_head * G + jnp.arange(G, dtype=jnp.int32)).reshape(1, G, 1, 1),
            (q_start + jnp.arange(q_tile, dtype=jnp.int32)).reshape(1, 1, q_tile, 1),
            (kv_start + jnp.arange(kv_tile, dtype=jnp.int32)).reshape(1, 1, 1, kv_tile),
        )
    )
    return program_layout(values, G, q_tile, kv_tile)


def program_layout(values: jax.Array, group: int, q_tile: int, kv_tile: int) -> jax.Array:
    """One program's tile values ``[1, G | 1, q_tile | 1, kv_tile | 1]`` (the ``G`` query heads
    of one key head) as ``[q_tile * G, kv_tile]`` with row ``t * G + g``."""
    values = jnp.broadcast_to(values[0], (group, q_tile, kv_tile))
    return jnp.swapaxes(values, 0, 1).reshape(q_tile * group, kv_tile)


@dataclasses.dataclass(frozen=True)
class Rebuild:
    """Rebuilds a pytree (a mask or a bias rule) from its array leaves; hashable, so it can be a
    static argument. Non-array leaves (functions, Python numbers) stay static."""

    treedef: Any
    static_leaves: tuple[Any, ...]
    array_positions: tuple[int, ...]

    def __call__(self, arrays: list[Any]) -> Any:
        leaves = list(self.static_leaves)
        for position, array in zip(self.array_positions, arrays, strict=True):
            leaves.insert(position, array)
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


def partition(tree: Any) -> tuple[list[Any], Rebuild]:
    """Split ``tree`` into its array leaves (traced inside kernels) and a static rebuilder."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    is_array = [isinstance(leaf, jax.Array | np.ndarray | np.generic) for leaf in leaves]
    arrays = [leaf for leaf, array in zip(leaves, is_array, strict=True) if array]
    static = tuple(leaf for leaf, array in zip(leaves, is_array, strict=True) if not array)
    positions = tuple(i for i, array in enumerate(is_array) if array)
    return arrays, Rebuild(treedef, static, positions)


def is_traceable(rule_of: Callable[[Any], Rule], tree: Any, shape: tuple[int, ...]) -> bool:
    """Whether the rule ``rule_of(tree)`` runs on traced tile indices and traced array leaves, as
    inside a kernel (rules written with NumPy functions do not). Only shapes are evaluated."""
    B, N = shape[:2]
    arrays, rebuild = partition(tree)

    def probe(arrays: list[Any], start: jax.Array) -> jax.Array:
        return tile_values(rule_of(rebuild(arrays)), B, N, N, start, 1, start, 1)

    try:
        jax.eval_shape(probe, arrays, jnp.int32(0))
    except (jax.errors.TracerArrayConversionError, jax.errors.TracerIntegerConversionError):
        return False
    return True
