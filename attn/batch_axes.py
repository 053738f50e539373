"""Leading batch axes of attention inputs: none (``[T, N, H]``), one (``[B, T, N, H]``) or several
(``[..., T, N, H]``), as ``jax.nn``, flax and tokamax accept them.

:func:`attn.attend` flattens them into one axis ``B`` (row-major) for its implementations and
restores them on the results; mask and bias arrays broadcastable to ``[..., N, T, S]`` are
flattened the same way. A :class:`attn.masks.Mask` rule sees that flattened index as ``b``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax.numpy as jnp
import numpy as np

__all__ = ["BatchAxes", "batch_axes"]


@dataclasses.dataclass(frozen=True)
class BatchAxes:
    """The leading axes ``shape`` shared by q ``[..., T, N, H]``, k and v ``[..., S, K, H]``."""

    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        """``B``: the number of examples once the axes are flattened."""
        return math.prod(self.shape)

    def flatten(self, x: Any) -> Any:
        """``[..., L, heads, features] -> [B, L, heads, features]``."""
        return x.reshape(self.size, *x.shape[len(self.shape) :])

    def restore(self, x: Any) -> Any:
        """``[B, ...] -> [*shape, ...]``: a result of the flattened call with its axes back."""
        return x.reshape(*self.shape, *x.shape[1:])

    def flatten_pairs(self, array: Any, name: str) -> Any:
        """A mask or bias array broadcastable to ``[..., N, T, S]`` as one broadcastable to the
        flattened ``[B, N, T, S]`` (rank <= 4; NumPy stays NumPy, so masks stay static).

        Arrays of higher rank than ``[..., N, T, S]`` may have extra leading axes of size 1."""
        full = len(self.shape) + 3
        if array.ndim > full:
            extra = array.shape[: array.ndim - full]
            if any(size != 1 for size in extra):
                raise ValueError(
                    f"{name} of shape {tuple(array.shape)} has more axes than [..., N, T, S] "
                    f"for batch axes {self.shape}"
                )
            array = array.reshape(array.shape[len(extra) :])
        if len(self.shape) == 1:
            return array  # already [B | 1, N | 1, T | 1, S | 1] or shorter: checked later
        array = array.reshape((1,) * (full - array.ndim) + tuple(array.shape))
        lead, pairs = array.shape[: len(self.shape)], array.shape[len(self.shape) :]
        if all(size == 1 for size in lead):
            return array.reshape(1, *pairs)
        if any(size not in (1, want) for size, want in zip(lead, self.shape, strict=True)):
            raise ValueError(
                f"{name} of shape {tuple(array.shape)} does not broadcast over the batch axes "
                f"{self.shape} of q, k and v"
            )
        xp = np if isinstance(array, np.ndarray) else jnp
        return xp.broadcast_to(array, self.shape + pairs).reshape(self.size, *pairs)


def batch_axes(q: Any, k: Any, v: Any) -> BatchAxes:
    """The batch axes of q ``[..., T, N, H]``, k ``[..., S, K, H]`` and v ``[..., S, K, Hv]``,
    or ``ValueError`` unless all three have rank >= 3 and the same leading axes."""
    for name, x, letters in (("q", q, "T, N, H"), ("k", k, "S, K, H"), ("v", v, "S, K, Hv")):
        if getattr(x, "ndim", 0) < 3:
            raise ValueError(
                f"{name} must be an array [..., {letters}] of rank >= 3, "
                f"got {getattr(x, 'shape', type(x).__name__)}"
            )
    if not q.shape[:-3] == k.shape[:-3] == v.shape[:-3]:
        raise ValueError(
            f"q, k and v must have the same leading batch axes: q {q.shape}, k {k.shape}, "
            f"v {v.shape}"
        )
    return BatchAxes(tuple(q.shape[:-3]))
