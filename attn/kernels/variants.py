"""Efficient attention variants behind one signature, so configs can swap them for ``attend``.

``fn(q, k, v, *, mask=None, **options) -> out [B, T, N, Hv]`` with the shapes of
:func:`attn.attend`. They are different models (linear attention) or approximations
(Performer) of softmax attention, not implementations of it, so they are catalog kind
``"attention"`` rather than values of ``attend(implementation=...)``.

Their weights ``phi(q) . phi(k)`` factor over queries and keys, so masks that factor the same
way keep the O(T + S) cost: ``causal()`` (prefix sums) and ``padding(...)`` or a key-only
boolean array ``[B, 1, 1, S]`` (zero features for padded keys, zero output for padded queries),
alone or joined with ``&``. Any other mask (a window, segments, a KV cache's per-example causal
offsets) is applied exactly to the ``[B, N, T, S]`` weights: O(T * S), which suits a decoding
step (T = 1) but not long training sequences.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from attn import masks
from attn.kernels.linear import feature_function, kernel_attention
from attn.kernels.performer import positive_features, random_features

__all__ = ["linear", "performer"]

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class _FactoredMask:
    """A mask as a product of a causal flag, valid query rows and valid keys ``[B, L]``."""

    causal: bool = False
    q_valid: Array | None = None
    kv_valid: Array | None = None

    def join(self, other: _FactoredMask) -> _FactoredMask:
        def both(a: Array | None, b: Array | None) -> Array | None:
            return b if a is None else a if b is None else a & b

        return _FactoredMask(
            self.causal or other.causal,
            both(self.q_valid, other.q_valid),
            both(self.kv_valid, other.kv_valid),
        )


def _valid(lengths: Array, batch: int, length: int) -> Array:
    """``[B, length]`` bool from lengths ``[B]`` or one length for all examples."""
    lengths = jnp.broadcast_to(jnp.asarray(lengths), (batch,))
    return jnp.arange(length)[None, :] < lengths[:, None]


def _factor(mask: masks.Mask, B: int, T: int, S: int) -> _FactoredMask | None:
    """``mask`` as a :class:`_FactoredMask`, or ``None`` if it does not factor that way. The
    mask classes are private to attn.masks: this needs their structure, not just the rule."""
    if isinstance(mask, masks._And):
        left, right = _factor(mask.left, B, T, S), _factor(mask.right, B, T, S)
        return None if left is None or right is None else left.join(right)
    if isinstance(mask, masks._Causal) and isinstance(mask.offset, int) and mask.offset == 0:
        return _FactoredMask(causal=True) if T == S else None
    if isinstance(mask, masks._Padding):
        return _FactoredMask(
            q_valid=None if mask.q_lengths is None else _valid(mask.q_lengths, B, T),
            kv_valid=None if mask.kv_lengths is None else _valid(mask.kv_lengths, B, S),
        )
    if isinstance(mask, masks._ArrayMask) and mask.array.shape[1:3] == (1, 1):
        return _FactoredMask(kv_valid=jnp.broadcast_to(mask.array[:, 0, 0, :], (B, S)))
    return None


def _attend_features(
    phi_q: Array, phi_k: Array, v: Array, mask: masks.Mask | Array | None, chunk: int
) -> Array:
    """Weights ``phi_q . phi_k`` normalised per query over the keys ``mask`` lets it see."""
    (B, T, N, _), S, K = phi_q.shape, phi_k.shape[1], phi_k.shape[2]
    if mask is None:
        return kernel_attention(phi_q, phi_k, v, chunk=chunk)
    mask = masks.as_mask(mask)
    factored = _factor(mask, B, T, S)
    if factored is None:
        visible_bnts = mask.dense((B, N, T, S))
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
    if factored.kv_valid is not None:
        phi_k = phi_k * factored.kv_valid[:, :, None, None].astype(phi_k.dtype)
    out = kernel_attention(phi_q, phi_k, v, causal=factored.causal, chunk=chunk)
    if factored.q_valid is not None:
        out = out * factored.q_valid[:, :, None, None].astype(out.dtype)
    return out


def linear(
    q: Array,
    k: Array,
    v: Array,
    *,
    mask: masks.Mask | Array | None = None,
    feature_map: str | Callable[[Array], Array] = "elu",
    chunk: int = 128,
) -> Array:
    """Linear attention (:func:`attn.kernels.linear_attention`) with any ``mask`` (see the
    module docstring for which masks keep it linear).

    q ``[B, T, N, H]``, k ``[B, S, K, H]``, v ``[B, S, K, Hv]`` -> ``[B, T, N, Hv]``; rows that
    see no key output 0."""
    phi = feature_function(feature_map)
    return _attend_features(phi(q), phi(k), v, mask, chunk)


def performer(
    q: Array,
    k: Array,
    v: Array,
    *,
    mask: masks.Mask | Array | None = None,
    num_features: int = 256,
    seed: int = 0,
    rng: Array | None = None,
    chunk: int = 128,
) -> Array:
    """Performer FAVOR+ (:func:`attn.kernels.performer_attention`) with any ``mask``.

    The ``num_features`` orthogonal random features come from ``rng`` when given (pass a new
    one to redraw them) and otherwise from ``seed``, so that a model sees the same features at
    every step unless it asks for new ones. Shapes as :func:`linear`."""
    rng = jax.random.key(seed) if rng is None else rng
    projection = random_features(rng, num_features, q.shape[-1])
    phi_q = positive_features(q, projection, is_query=True)
    phi_k = positive_features(k, projection, is_query=False)
    return _attend_features(phi_q, phi_k, v, mask, chunk)
