"""Tile schedules: which (query tile, key tile) pairs a chunked kernel visits, and how.

From a mask's tile summary, every pair is either skipped (fully masked), *full* (every entry
visible: no mask is evaluated) or *partial* (the mask rule is evaluated per entry). With a
NumPy summary (static masks) this is decided at trace time, so causal attention visits about
half of the pairs and a sliding window O(T * window / tile**2) of them. A traced summary
(lengths or segment ids under ``jit``) cannot shape the program: every pair is then partial and
a traced per-pair flag skips the empty ones at run time.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from attn import masks

__all__ = ["TilePlan", "plan_tiles"]


@dataclasses.dataclass(frozen=True)
class TilePlan:
    """Tile sizes and the visited pairs ``(query tile, key tile)``; hashable (a static argument)."""

    q_tile: int
    kv_tile: int
    num_q_tiles: int
    num_kv_tiles: int
    full: tuple[tuple[int, int], ...]
    partial: tuple[tuple[int, int], ...]

    @property
    def padded_lengths(self) -> tuple[int, int]:
        return self.num_q_tiles * self.q_tile, self.num_kv_tiles * self.kv_tile

    @property
    def visited_fraction(self) -> float:
        """Share of all tile pairs the kernel computes (1.0 without skipping)."""
        return (len(self.full) + len(self.partial)) / (self.num_q_tiles * self.num_kv_tiles)

    def pairs(self, which: str, *, kv_major: bool = False) -> np.ndarray:
        """The ``full`` or ``partial`` pairs as int32 ``[P, 2]``, sorted by query tile (forward:
        a query tile's accumulators stay in cache) or by key tile (backward: dK, dV do)."""
        pairs = np.asarray(getattr(self, which), dtype=np.int32).reshape(-1, 2)
        order = np.lexsort((pairs[:, 0], pairs[:, 1]) if kv_major else (pairs[:, 1], pairs[:, 0]))
        return pairs[order]


def tile_size(length: int, tile: int) -> int:
    """``tile``, or the whole length when shorter (one tile, no padding)."""
    if tile < 1:
        raise ValueError(f"tile sizes must be positive, got {tile}")
    return min(tile, length)


def plan_tiles(
    mask: masks.Mask | None, shape: tuple[int, int, int, int], q_tile: int, kv_tile: int
) -> tuple[TilePlan, jax.Array | None]:
    """Plan the tiles for ``shape = (B, N, T, S)``.

    Returns the plan and, when the mask's summary is traced, a traced bool ``[nq, nk]`` grid
    saying which pairs have any visible entry (``None`` for static summaries).
    """
    _, _, T, S = shape
    q_tile, kv_tile = tile_size(T, q_tile), tile_size(S, kv_tile)
    nq, nk = -(-T // q_tile), -(-S // kv_tile)
    any_visible = all_visible = np.ones((nq, nk), dtype=bool)
    if mask is not None:
        # Eagerly on constants even under jit: a static mask must yield a NumPy summary.
        with jax.ensure_compile_time_eval():
            summary = mask.tile_summary(shape, q_tile, kv_tile)
        try:
            # A tile pair is computed for all examples and heads at once.
            any_visible = any_visible & np.asarray(summary.any_visible).any(axis=(0, 1))
            all_visible = all_visible & np.asarray(summary.all_visible).all(axis=(0, 1))
        except jax.errors.TracerArrayConversionError:
            visit = jnp.broadcast_to(summary.any_visible.any(axis=(0, 1)), (nq, nk))
            every = _as_tuples(np.argwhere(np.ones((nq, nk), dtype=bool)))
            return TilePlan(q_tile, kv_tile, nq, nk, (), every), visit
    if S % kv_tile:
        # Keys past S are padding: the last key tile must always evaluate the mask.
        all_visible = all_visible & (np.arange(nk) < nk - 1)
    full = _as_tuples(np.argwhere(any_visible & all_visible))
    partial = _as_tuples(np.argwhere(any_visible & ~all_visible))
    return TilePlan(q_tile, kv_tile, nq, nk, full, partial), None


def _as_tuples(pairs: np.ndarray) -> tuple[tuple[int, int], ...]:
    return tuple((int(i), int(j)) for i, j in pairs)
