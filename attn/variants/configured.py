"""Efficient attention variants behind one call, so that configs can swap them for ``attend``.

Each variant is a small frozen dataclass of options (catalog kind ``"attention"``:
``attn.catalog.get("attention", "performer(num_features=128)")``) called as
``variant(q, k, v, *, mask=None, **params) -> out [B, T, N, Hv]`` with the shapes of
:func:`attn.attend`; a variant with learned parameters (Linformer's projection) creates them
with ``init_params(rng)`` and takes them as keywords. They are different models (linear
attention, Linformer) or approximations (Performer) of softmax attention, not implementations
of it, so they are not values of ``attend(implementation=...)``.

Linear attention and Performer weigh with ``phi(q) . phi(k)``, which factors over queries and
keys, so masks that factor the same way keep the O(T + S) cost: ``causal()`` (prefix sums) and
``padding(...)`` or a key-only boolean array ``[B, 1, 1, S]`` (zero features for padded keys,
zero output for padded queries), alone or joined with ``&``. Any other mask (a window,
segments, a KV cache's per-example causal offsets) is applied exactly to the ``[B, N, T, S]``
weights: O(T * S), which suits a decoding step (T = 1) but not long training sequences.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from attn import masks
from attn.variants.linear import feature_function, kernel_attention
from attn.variants.linformer import linformer_project
from attn.variants.performer import positive_features, random_features

__all__ = ["Linear", "Linformer", "Performer"]

Array = jax.Array


_LinearForm = tuple[bool, Array | None, Array | None]


def _linear_form(factors: masks.Factors, shape: tuple[int, int, int, int]) -> _LinearForm | None:
    """``(causal, q_valid [B, T], kv_valid [B, S])`` when the mask is ``causal()`` (with
    ``T == S``), query and key validity, or their ``&``: what weights ``phi(q) . phi(k)``
    apply at linear cost. ``None`` for any other mask."""
    _, _, T, S = shape
    if factors.rest is not None or factors.left is not None or factors.right not in (None, 0):
        return None
    causal = factors.right == 0
    if causal and T != S:
        return None
    return causal, factors.queries(shape), factors.keys(shape)


def _checked(
    mask: masks.Mask | Array | None, q: Array, k: Array, v: Array
) -> tuple[masks.Mask | None, Array, Array, Array]:
    """``mask`` as a :class:`attn.masks.Mask` checked against the shapes, and q, k, v with the
    rows it hides from every pairing cleared (:func:`attn.masks.clear_hidden`)."""
    if mask is None:
        return None, q, k, v
    mask = masks.as_mask(mask)
    mask.check((q.shape[0], q.shape[2], q.shape[1], k.shape[1]))
    return (mask, *masks.clear_hidden(mask, q, k, v))


def _attend_features(
    phi_q: Array, phi_k: Array, v: Array, mask: masks.Mask | None, chunk: int
) -> Array:
    """Weights ``phi_q . phi_k`` normalised per query over the keys ``mask`` lets it see."""
    (B, T, N, _), S, K = phi_q.shape, phi_k.shape[1], phi_k.shape[2]
    if mask is None:
        return kernel_attention(phi_q, phi_k, v, chunk=chunk)
    shape = (B, N, T, S)
    factors = mask.factors()
    phi_k = masks.zero_rows(phi_k, factors.keys(shape))  # keys no query sees weigh nothing
    form = _linear_form(factors, shape)
    if form is None:
        visible_bnts = mask.dense(shape)
        weights = jnp.einsum(
            "btkgf,bskf->bkgts",
            phi_q.reshape(B, T, K, N // K, -1),
            phi_k,
            preferred_element_type=jnp.float32,
        ).reshape(B, N, T, S)
        weights = jnp.where(visible_bnts, weights, 0.0)
        total = weights.sum(axis=-1, keepdims=True)
        weights = weights / jnp.where(total > 0, total, 1.0)
        out = jnp.einsum(
            "bkgts,bskh->btkgh", weights.reshape(B, K, N // K, T, S), v.astype(weights.dtype)
        )
        return out.reshape(B, T, N, -1).astype(v.dtype)
    causal, q_valid, _ = form
    return masks.zero_rows(kernel_attention(phi_q, phi_k, v, causal=causal, chunk=chunk), q_valid)


def _check_fields(
    variant: object, positive: tuple[str, ...], integers: tuple[str, ...] = ()
) -> None:
    """Raise ``ValueError`` naming the field unless every ``positive`` field is an int >= 1 and
    every ``integers`` field an int: a bad config value fails when the config is read."""
    for name in (*positive, *integers):
        value = getattr(variant, name)
        is_int = isinstance(value, int | np.integer) and not isinstance(value, bool)
        if not is_int or (name in positive and value < 1):
            valid = "an int >= 1" if name in positive else "an int"
            raise ValueError(f"{type(variant).__name__}: {name} must be {valid}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Linear:
    """Linear attention (:func:`attn.variants.linear_attention`, Katharopoulos et al. 2020) with
    any ``mask``; ``feature_map`` ``"elu"`` (elu + 1), ``"relu"`` or a function."""

    feature_map: str | Callable[[Array], Array] = "elu"
    chunk: int = 128

    def __post_init__(self):
        feature_function(self.feature_map)  # a bad name fails when the config is read
        _check_fields(self, ("chunk",))

    def __call__(
        self, q: Array, k: Array, v: Array, *, mask: masks.Mask | Array | None = None
    ) -> Array:
        """q ``[B, T, N, H]``, k ``[B, S, K, H]``, v ``[B, S, K, Hv]`` -> ``[B, T, N, Hv]``;
        rows that see no key output 0."""
        mask, q, k, v = _checked(mask, q, k, v)
        phi = feature_function(self.feature_map)
        return _attend_features(phi(q), phi(k), v, mask, self.chunk)


@dataclasses.dataclass(frozen=True)
class Performer:
    """Performer FAVOR+ (:func:`attn.variants.performer_attention`, Choromanski et al. 2021)
    with any ``mask``: ``num_features`` positive orthogonal random features drawn from
    ``seed``, so a model sees the same features at every step unless a call passes ``rng``
    (pass a new one to redraw them)."""

    num_features: int = 256
    seed: int = 0
    chunk: int = 128

    def __post_init__(self):
        _check_fields(self, ("num_features", "chunk"), ("seed",))

    def __call__(
        self,
        q: Array,
        k: Array,
        v: Array,
        *,
        mask: masks.Mask | Array | None = None,
        rng: Array | None = None,
    ) -> Array:
        """Shapes as :meth:`Linear.__call__`."""
        mask, q, k, v = _checked(mask, q, k, v)
        rng = jax.random.key(self.seed) if rng is None else rng
        projection = random_features(rng, self.num_features, q.shape[-1])
        phi_q = positive_features(q, projection, is_query=True)
        phi_k = positive_features(k, projection, is_query=False)
        return _attend_features(phi_q, phi_k, v, mask, self.chunk)


@dataclasses.dataclass(frozen=True)
class Linformer:
    """Linformer (Wang et al. 2020): softmax attention over keys and values projected along
    the sequence by a learned ``projection [projected_length, max_length]`` (shared by keys,
    values and heads; sequences up to ``max_length`` use its first S columns). Bidirectional:
    the projection mixes positions, so of the masks only padding applies (padded keys and
    values are zeroed before the projection, padded queries output 0)."""

    projected_length: int = 64
    max_length: int = 512

    def __post_init__(self):
        _check_fields(self, ("projected_length", "max_length"))

    def init_params(self, rng: Array) -> dict[str, Array]:
        """The learned parameters: ``{"projection": [projected_length, max_length]}`` with
        N(0, 1 / projected_length) entries."""
        shape = (self.projected_length, self.max_length)
        return {"projection": jax.random.normal(rng, shape) / math.sqrt(self.projected_length)}

    def __call__(
        self,
        q: Array,
        k: Array,
        v: Array,
        *,
        mask: masks.Mask | Array | None = None,
        projection: Array,
    ) -> Array:
        """Shapes as :meth:`Linear.__call__`, with ``S <= max_length``."""
        (B, T, N, _), S = q.shape, k.shape[1]
        if self.max_length < S:
            raise ValueError(f"Linformer: {S} keys exceed its max_length={self.max_length}")
        mask, q, k, v = _checked(mask, q, k, v)
        q_valid = None
        if mask is not None:
            form = _linear_form(mask.factors(), (B, N, T, S))
            if form is None or form[0]:
                raise ValueError(
                    "Linformer mixes all key positions, so it applies only padding masks "
                    "(padding(...) or a key-only [B, 1, 1, S] array)"
                )
            q_valid = form[1]
        # Every query sees all projected rows, so plain softmax attention without a mask
        # (padded queries are zeroed below).
        k_proj, v_proj = linformer_project(k, v, projection[:, :S])
        out = jax.nn.dot_product_attention(q, k_proj.astype(q.dtype), v_proj.astype(q.dtype))
        return masks.zero_rows(out, q_valid)
