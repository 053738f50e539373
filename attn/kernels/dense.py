"""Dense attention pieces laid out for XLA: logits, a softmax with a cheap gradient, the sum.

Same semantics as :mod:`attn.scores` and :mod:`attn.weighting`, arranged so that XLA:CPU runs
them near ``jax.nn.dot_product_attention``'s speed: queries are grouped as ``[B, K, G, T, H]``
before the matmul, so the ``[B, N, T, S]`` logits come out of it without a transpose, and the
softmax has a custom JVP (``y * (dz - sum(y * dz))``) instead of differentiating through its
masking and shifting.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["logits", "softmax", "weighted_sum"]

Array = jax.Array


def logits(q: Array, k: Array) -> Array:
    """``q . k``: float32 (or wider) ``[B, N, T, S]`` for q ``[B, T, N, H]``, k ``[B, S, K, H]``."""
    B, T, N, H = q.shape
    _, S, K, _ = k.shape
    q_bkgth = q.reshape(B, T, K, N // K, H).transpose(0, 2, 3, 1, 4)
    dtype = jnp.result_type(q.dtype, k.dtype, jnp.float32)
    out = jnp.einsum("bkgth,bskh->bkgts", q_bkgth, k, preferred_element_type=dtype)
    return out.reshape(B, N, T, S)


def weighted_sum(weights: Array, v: Array) -> Array:
    """``weights [B, N, T, S]`` applied to ``v [B, S, K, Hv]``: ``[B, T, N, Hv]`` in v's dtype."""
    B, N, T, S = weights.shape
    K, Hv = v.shape[2], v.shape[3]
    dtype = jnp.result_type(weights.dtype, v.dtype)
    out = jnp.einsum(
        "bkgts,bskh->bkgth",
        weights.reshape(B, K, N // K, T, S).astype(dtype),
        v,
        preferred_element_type=dtype,
    )
    return out.transpose(0, 3, 1, 2, 4).reshape(B, T, N, Hv).astype(v.dtype)


def _forward(z: Array, visible: Array | None, sink: Array | None) -> tuple[Array, Array | None]:
    """Weights and the sink's weight (``None`` without a sink)."""
    if visible is not None:
        z = jnp.where(visible, z, -jnp.inf)
    row_max = jnp.max(z, axis=-1, keepdims=True, initial=-jnp.inf)
    if sink is not None:
        row_max = jnp.maximum(row_max, sink)
    # Rows with nothing visible shift by 0, so their terms are exp(-inf) = 0, not NaN.
    shift = jnp.where(row_max == -jnp.inf, 0.0, row_max)
    terms = jnp.exp(z - shift)
    total = terms.sum(axis=-1, keepdims=True)
    sink_term = None
    if sink is not None:
        sink_term = jnp.exp(sink - shift)
        total = total + sink_term
    denominator = jnp.where(total > 0, total, 1.0)
    return terms / denominator, None if sink is None else sink_term / denominator


@jax.custom_jvp
def _softmax(z: Array, visible: Array | None, sink: Array | None) -> Array:
    return _forward(z, visible, sink)[0]


@_softmax.defjvp
def _softmax_jvp(primals: tuple, tangents: tuple) -> tuple[Array, Array]:
    z, visible, sink = primals
    dz, _, dsink = tangents
    weights, sink_weight = _forward(z, visible, sink)
    if visible is not None:
        dz = jnp.where(visible, dz, 0.0)  # a NaN tangent on a masked entry must not leak
    inner = jnp.sum(weights * dz, axis=-1, keepdims=True)
    if sink is not None:
        inner = inner + sink_weight * dsink
    return weights, weights * (dz - inner)


def softmax(
    logits_bnts: Array,
    visible: Array | None,
    *,
    inverse_temperature: Array | None = None,
    sink: Array | None = None,
) -> Array:
    """Softmax of ``logits * inverse_temperature`` over visible keys, with an optional sink logit
    (an extra key with a zero value); float32 weights, rows of zeros where nothing is visible.

    ``visible`` (``None``: every entry) and the row parameters broadcast against
    ``logits [B, N, T, S]``. Visibility must not be computed from the logits themselves: XLA
    then keeps the comparison alive in the backward pass, which costs twice the time.
    """
    z = logits_bnts if inverse_temperature is None else logits_bnts * inverse_temperature
    return _softmax(z, visible, sink)
