"""Fold attend's components (score, weighting, bias) into what fast implementations take.

A fast implementation computes logits as a plain ``q' . k'`` (plus a bias): the recognised
scores fold their scale, normalisation or projection into ``q'`` and ``k'`` here, where autodiff
differentiates them. Weightings are recognised by function (optionally a ``functools.partial``
with keyword settings). Anything unrecognised gives ``None``, so the caller can fall back to
the dense composition or raise an error that names the component.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from attn import scores, weighting

__all__ = [
    "Weighting",
    "describe",
    "fold_score",
    "foldable",
    "inverse_temperature",
    "recognize_weighting",
    "row_param",
    "unwrap",
]

Array = jax.Array

# Elementwise weightings and the keyword holding their per-row parameter.
_ELEMENTWISE = {
    weighting.sigmoid: ("sigmoid", "bias"),
    weighting.relu: ("relu", "scale"),
    weighting.squared_relu: ("squared_relu", "scale"),
}


def unwrap(fn: Callable[..., Any]) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The base function and keyword settings of ``fn`` (``functools.partial`` or plain)."""
    if isinstance(fn, functools.partial) and not fn.args:
        return fn.func, dict(fn.keywords)
    return fn, {}


def describe(fn: Any) -> str:
    """A short name for error messages."""
    base, keywords = unwrap(fn) if callable(fn) else (fn, {})
    name = getattr(base, "__name__", type(base).__name__)
    settings = ", ".join(f"{key}=..." for key in keywords)
    return f"{name}({settings})" if settings else name


def _unit(x: Array, dtype: jnp.dtype) -> Array:
    x = x.astype(dtype)
    norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
    return x / jnp.maximum(norm, jnp.finfo(dtype).tiny ** 0.5)  # as scores.cosine: zero stays 0


# Recognised scores and the keyword settings each may carry.
_FOLDABLE = {
    scores.dot: set(),
    scores.scaled_dot: {"scale"},
    scores.cosine: {"temperature"},
    scores.general: {"weight"},
}


def foldable(score_fn: Callable[..., Array]) -> bool:
    """Whether :func:`fold_score` recognises ``score_fn``."""
    base, keywords = unwrap(score_fn)
    if base not in _FOLDABLE or not set(keywords) <= _FOLDABLE[base]:
        return False
    return base is not scores.general or "weight" in keywords


def fold_score(score_fn: Callable[..., Array], q: Array, k: Array) -> tuple[Array, Array] | None:
    """``(q', k')`` with ``score_fn(q, k) == q' . k'`` (up to rounding), or ``None``.

    Recognises :func:`attn.scores.dot`, ``scaled_dot``, ``cosine`` and ``general``. ``q'`` keeps
    q's dtype except where the fold needs more precision (cosine, general: float32 or wider).
    """
    if not foldable(score_fn):
        return None
    base, keywords = unwrap(score_fn)
    if base is scores.dot:
        return q, k
    if base is scores.scaled_dot:
        scale = keywords.get("scale")
        if scale is None:
            scale = 1.0 / math.sqrt(q.shape[-1])
        return (q * jnp.asarray(scale, q.dtype)).astype(q.dtype), k
    if base is scores.cosine:
        temperature = keywords.get("temperature", 0.1)
        if not temperature > 0:
            raise ValueError(f"cosine: temperature must be > 0, got {temperature}")
        dtype = scores.accumulation_dtype(q, k)
        return _unit(q, dtype) / temperature, _unit(k, dtype)
    weight = keywords["weight"]
    N, H, Hk = q.shape[2], q.shape[3], k.shape[3]
    if weight.shape not in ((H, Hk), (N, H, Hk)):
        raise ValueError(
            f"general: weight must be [H, Hk] = {(H, Hk)} or [N, H, Hk] = {(N, H, Hk)}, "
            f"got {weight.shape}"
        )
    spec = "btnh,hd->btnd" if weight.ndim == 2 else "btnh,nhd->btnd"
    dtype = scores.accumulation_dtype(q, weight)
    return jnp.einsum(spec, q, weight, preferred_element_type=dtype), k.astype(dtype)


@dataclasses.dataclass(frozen=True)
class Weighting:
    """A recognised weighting: ``kind`` (softmax, sigmoid, relu, squared_relu), its per-row
    parameter (softmax: sink logit or None; sigmoid: bias; ReLU: scale; None = default) and, for
    softmax, its temperature."""

    kind: str
    param: Any = None
    temperature: Any = 1.0


def recognize_weighting(weighting_fn: Callable[..., Array]) -> Weighting | None:
    """The :class:`Weighting` for a function of :mod:`attn.weighting`, or ``None``."""
    base, keywords = unwrap(weighting_fn)
    if base is weighting.softmax and set(keywords) <= {"temperature"}:
        return Weighting("softmax", None, keywords.get("temperature", 1.0))
    if base is weighting.softmax_with_sink and set(keywords) <= {"sink_logit"}:
        return Weighting("softmax", keywords.get("sink_logit", 0.0))
    if base in _ELEMENTWISE:
        kind, name = _ELEMENTWISE[base]
        if set(keywords) <= {name}:
            return Weighting(kind, keywords.get(name))
    return None


def row_param(value: Any, shape: tuple[int, int, int, int], name: str) -> Array:
    """A per-row parameter -- a scalar, per-head ``[N]`` or an array broadcastable to
    ``[B, N, T, 1]`` -- as a float32 rank-4 array broadcastable to ``[B, N, T, 1]``."""
    B, N, T, _ = shape
    value = jnp.asarray(value)
    if not (jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)):
        raise TypeError(f"{name} must be a real number or array, got dtype {value.dtype}")
    if value.ndim == 1 and value.shape[0] == N:
        value = value.reshape(N, 1, 1)
    target = (B, N, T, 1)
    try:
        fits = jnp.broadcast_shapes(value.shape, target) == target
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"{name} of shape {tuple(value.shape)} must be a scalar, per-head [N] = [{N}] or "
            f"broadcast to [B, N, T, 1] = {target} (one value per query row)"
        )
    return value.astype(jnp.float32).reshape((1,) * (4 - value.ndim) + value.shape)


def inverse_temperature(temperature: Any, shape: tuple[int, int, int, int]) -> Array | None:
    """``1 / temperature`` broadcastable to ``[B, N, T, 1]``, or ``None`` for the constant 1."""
    if isinstance(temperature, int | float) and temperature == 1.0:
        return None
    value = row_param(temperature, shape, "softmax: temperature")
    try:
        concrete = np.asarray(value)
    except jax.errors.TracerArrayConversionError:
        concrete = None  # traced: jit users own the promise, as in attn.weighting
    if concrete is not None and not np.all(concrete > 0):
        raise ValueError(f"softmax: temperature must be > 0, got {temperature!r}")
    return 1.0 / value
