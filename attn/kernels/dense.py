"""The dense implementation of :func:`attn.attend`: the composition itself, with the full
``[B, N, T, S]`` logits and weights, and its pieces laid out for XLA.

Same semantics as :mod:`attn.scores` and :mod:`attn.weighting`, arranged so that XLA:CPU runs
them near ``jax.nn.dot_product_attention``'s speed: queries are grouped as ``[B, K, G, T, H]``
before the matmul, so the ``[B, N, T, S]`` logits come out of it without a transpose, and the
softmax has a custom JVP (``y * (dz - sum(y * dz))``) instead of differentiating through its
masking and shifting. Components it does not recognise are called as given.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from attn import masks, weighting
from attn.kernels import fold, rules
from attn.kernels.request import Request

__all__ = ["attention", "log_normalizer_for", "logits", "softmax", "weighted_sum"]

Array = jax.Array


def logits(q: Array, k: Array, *, dtype: Any = jnp.float32, precision: Any = None) -> Array:
    """``q . k``: ``[B, N, T, S]`` for q ``[B, T, N, H]``, k ``[B, S, K, H]``, accumulated in
    ``dtype`` or wider (float64 inputs stay float64), with the matmul's ``precision``."""
    B, T, N, H = q.shape
    _, S, K, _ = k.shape
    q_bkgth = q.reshape(B, T, K, N // K, H).transpose(0, 2, 3, 1, 4)
    dtype = jnp.result_type(q.dtype, k.dtype, dtype)
    out = jnp.einsum(
        "bkgth,bskh->bkgts", q_bkgth, k, precision=precision, preferred_element_type=dtype
    )
    return out.reshape(B, N, T, S)


def weighted_sum(weights: Array, v: Array, *, precision: Any = None) -> Array:
    """``weights [B, N, T, S]`` applied to ``v [B, S, K, Hv]``: ``[B, T, N, Hv]`` in v's dtype."""
    B, N, T, S = weights.shape
    K, Hv = v.shape[2], v.shape[3]
    dtype = jnp.result_type(weights.dtype, v.dtype)
    out = jnp.einsum(
        "bkgts,bskh->bkgth",
        weights.reshape(B, K, N // K, T, S).astype(dtype),
        v,
        precision=precision,
        preferred_element_type=dtype,
    )
    return out.transpose(0, 3, 1, 2, 4).reshape(B, T, N, Hv).astype(v.dtype)


def _forward(z: Array, visible: Array | None, sink: Array | None) -> tuple[Array, Array | None]:
    """Weights and the sink's weight (``None`` without a sink)."""
    if visible is not None:
        z = jnp.where(visible, z, weighting.MASKED_LOGIT)
    row_max = jnp.max(z, axis=-1, keepdims=True, initial=weighting.EMPTY_ROW_MAX)
    if sink is not None:
        row_max = jnp.maximum(row_max, sink)
    # Finite fills (jax.debug_infs stays quiet): a masked term is exp(MASKED_LOGIT - shift) = 0,
    # in a row with nothing visible too, which shifts by 0. That select also keeps XLA:CPU from
    # fusing the shift into the logits matmul, which made the forward pass 40% slower.
    shift = jnp.where(row_max > weighting.EMPTY_ROW_MAX, row_max, 0.0)
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


def log_normalizer_for(weighting_fn: Callable[..., Array]) -> Callable[..., Array]:
    """The log-sum-exp residual that goes with a softmax-type weighting (with its settings)."""
    base, keywords = fold.unwrap(weighting_fn)
    if base is weighting.softmax:
        return functools.partial(weighting.log_normalizer, **keywords)
    if base is weighting.softmax_with_sink:
        keywords.setdefault("sink_logit", 0.0)
        return functools.partial(weighting.log_normalizer, **keywords)
    raise ValueError(
        f"return_lse: the log-sum-exp residual exists only for softmax and softmax_with_sink "
        f"weightings, got {weighting_fn!r}"
    )


def _dropout(weights: Array, rate: Any, rng: Array, *, broadcast: bool) -> Array:
    """Inverted dropout of the weights; ``rate`` may be a traced scalar. ``broadcast``: one
    ``[T, S]`` mask for every example and head (flax's ``broadcast_dropout``)."""
    keep_prob = 1.0 - jnp.asarray(rate, weights.dtype)
    shape = (1, 1, *weights.shape[2:]) if broadcast else weights.shape
    keep = jax.random.bernoulli(rng, keep_prob, shape)
    return jnp.where(keep, weights / keep_prob, 0.0)


def attention(request: Request) -> Array | tuple[Array, ...]:
    """``request`` as the composition, with the full ``[B, N, T, S]`` logits and weights.

    Recognised scores and softmax weightings use the pieces above; anything else calls the
    components as given. Returns ``out`` and, as asked, the weights and the lse rows.
    """
    shape = request.shape
    folded = fold.fold_score(request.score, request.q, request.k)
    if folded is not None:
        logits_bnts = logits(*folded, dtype=request.logits_dtype, precision=request.precision)
    else:
        logits_bnts = request.score(request.q, request.k)
        if logits_bnts.shape != shape:
            raise ValueError(
                f"score {request.score!r} returned {logits_bnts.shape}, expected {shape}"
            )
        logits_bnts = logits_bnts.astype(jnp.result_type(logits_bnts, request.logits_dtype))
    bias_bnts = request.bias
    if request.bias_is_rule:
        bias_bnts = rules.dense_values(request.bias, shape)
    if bias_bnts is not None:
        logits_bnts = logits_bnts + bias_bnts
    cap = request.logits_soft_cap
    if cap is not None:
        # After the bias (as tokamax and Gemma 2), so a -inf bias becomes -cap: mask instead.
        logits_bnts = cap * jnp.tanh(logits_bnts / cap)
    mask_bnts = masks.as_array(request.mask, shape)

    recognized = fold.recognize_weighting(request.weighting)
    if recognized is not None and recognized.kind == "softmax":
        # A -inf logit counts as masked (as in attn.weighting). Recognised scores are finite,
        # so only a bias or a user's score can make one; test those, not the logits, when we
        # can (a test on the logits doubles the backward pass's time on XLA:CPU).
        visible = mask_bnts
        source = logits_bnts if folded is None else bias_bnts
        if source is not None and cap is None:  # capped logits are finite
            finite = source != -jnp.inf
            visible = finite if visible is None else visible & finite
        sink = None
        if recognized.param is not None:
            sink = fold.row_param(recognized.param, shape, "softmax_with_sink: sink_logit")
        weights_bnts = softmax(
            logits_bnts,
            visible,
            inverse_temperature=fold.inverse_temperature(recognized.temperature, shape),
            sink=sink,
        )
    else:
        weights_bnts = request.weighting(logits_bnts, mask_bnts)
    returned_weights = weights_bnts
    if request.dropout_active:
        weights_bnts = _dropout(
            weights_bnts, request.dropout_rate, request.rng, broadcast=request.broadcast_dropout
        )
    out = weighted_sum(weights_bnts, request.v, precision=request.precision)

    extras: list[Any] = []
    if request.return_weights:
        extras.append(returned_weights)
    if request.return_lse:
        extras.append(log_normalizer_for(request.weighting)(logits_bnts, mask_bnts))
    return (out, *extras) if extras else out
