"""Dropout whose rate may be an array: ``nnx.Dropout``'s call, without its Python test on the
rate, so a sweep can vmap trials over the rate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from attn.kernels.request import concrete

__all__ = ["Dropout", "maybe_active"]

Array = jax.Array


def maybe_active(rate: Any) -> bool:
    """Whether dropout at ``rate`` may drop anything: a traced rate might (it is not 0 for
    certain), a concrete one if it is above 0."""
    value = concrete(rate)
    return value is None or bool(value > 0)


def _check_rate(rate: Any, where: str) -> None:
    value = concrete(rate)
    if value is not None and not (value.shape == () and 0.0 <= value <= 1.0):
        raise ValueError(f"{where}: rate must be a number in [0, 1], got {rate!r}")


class Dropout(nnx.Module):
    """Inverted dropout: each entry is zeroed with probability ``rate`` and the others are
    scaled by ``1 / (1 - rate)``; the same arguments, stream and random draws as
    ``nnx.Dropout`` (one ``jax.random.bernoulli`` of the keep probability), so a module switched
    to it draws the same masks.

    ``rate`` is a number or a scalar array, maybe traced (e.g. vmapped over a sweep's trials);
    only a concrete rate is range-checked. ``nnx.Dropout`` compares ``rate == 0.0`` in Python,
    which a traced rate cannot answer.

    Args:
      rate: the probability of dropping an entry (not the keep rate), in ``[0, 1]``.
      broadcast_dims: axes that share one mask.
      deterministic: default of the call's ``deterministic`` (True: no dropout).
      rng_collection: the ``nnx.Rngs`` stream the keys come from.
      rngs: ``nnx.Rngs`` or a stream to fork; ``None`` if every call passes ``rngs`` (or the
        rate is 0).
    """

    def __init__(
        self,
        rate: float | Array,
        *,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ):
        _check_rate(rate, "Dropout")
        self.rate = rate
        self.broadcast_dims = tuple(broadcast_dims)
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        if isinstance(rngs, nnx.Rngs):
            self.rngs = rngs[rng_collection].fork()
        elif isinstance(rngs, nnx.RngStream):
            self.rngs = rngs.fork()
        elif rngs is None:
            self.rngs = nnx.data(None)
        else:
            raise TypeError(f"Dropout: rngs must be an nnx.Rngs, RngStream or None, got {rngs!r}")

    def set_view(self, deterministic: bool | None = None) -> None:
        """Used by ``nnx.view(model, deterministic=...)``."""
        if deterministic is not None:
            self.deterministic = deterministic

    def key(
        self,
        *,
        deterministic: bool | None = None,
        rngs: nnx.Rngs | nnx.RngStream | Array | None = None,
    ) -> Array | None:
        """The key of this call's mask, or ``None`` when nothing is dropped (deterministic, or a
        rate that is 0 for certain). ``rngs`` (a key, stream or ``nnx.Rngs``) takes precedence
        over the module's own stream."""
        if deterministic is None:
            deterministic = self.deterministic
        if deterministic is None:
            raise ValueError(
                "Dropout: no deterministic given, in the call or the constructor (or by nnx.view)"
            )
        if deterministic or not maybe_active(self.rate):
            return None
        source = self.rngs if rngs is None else rngs
        if source is None:
            raise ValueError(
                "Dropout: deterministic is False but there are no rngs, in the call or the "
                "constructor"
            )
        if isinstance(source, nnx.Rngs):
            return source[self.rng_collection]()
        if isinstance(source, nnx.RngStream):
            return source()
        return source

    def __call__(
        self,
        inputs: Array,
        *,
        deterministic: bool | None = None,
        rngs: nnx.Rngs | nnx.RngStream | Array | None = None,
    ) -> Array:
        """``inputs`` with dropout applied (unchanged when deterministic or at rate 0)."""
        rng = self.key(deterministic=deterministic, rngs=rngs)
        if rng is None:
            return inputs
        keep_prob = 1.0 - jnp.asarray(self.rate)
        shape = list(inputs.shape)
        for axis in self.broadcast_dims:
            shape[axis] = 1
        keep = jnp.broadcast_to(jax.random.bernoulli(rng, keep_prob, shape), inputs.shape)
        # At rate 1 every entry is dropped; the safe divisor keeps 0 / 0 out of the gradient.
        scaled = inputs / jnp.where(keep_prob > 0, keep_prob, 1.0).astype(inputs.dtype)
        return jnp.where(keep, scaled, jnp.zeros_like(inputs))
