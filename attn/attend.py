"""``attend``: score -> bias -> mask -> weighting -> dropout -> weighted sum of values."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from attn import catalog, masks, scores
from attn import weighting as weightings  # the module; `weighting` is attend's argument
from attn.batch_axes import BatchAxes, batch_axes
from attn.kernels import bias_tiles, dense, dispatch, fold
from attn.kernels.request import Request, concrete

__all__ = ["attend", "check_bias"]

check_bias = bias_tiles.check  # validates an additive score bias for (B, N, T, S)


def _check_v(v: jax.Array, k: jax.Array) -> None:
    if not hasattr(v, "ndim") or v.ndim != 4:
        raise ValueError(f"v must have rank 4 ([B, S, K, Hv]), got {getattr(v, 'shape', v)}")
    if not jnp.issubdtype(v.dtype, jnp.floating):
        raise TypeError(f"v must be a float array, got dtype {v.dtype}")
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(f"k and v must agree on [B, S, K]: k {k.shape}, v {v.shape}")


# Scores of q . k alone: they need q and k with the same head features (general and additive
# project them, user scores decide for themselves).
_SAME_FEATURES = (scores.dot, scores.scaled_dot, scores.cosine)


def _check_features(score_fn: Callable[..., jax.Array], q: jax.Array, k: jax.Array) -> None:
    if fold.unwrap(score_fn)[0] in _SAME_FEATURES and q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"score {fold.describe(score_fn)} needs q and k with the same head features H: "
            f"q {q.shape}, k {k.shape}"
        )


def _check_rng(rng: Any) -> None:
    """A typed key (``jax.random.key``) or a raw uint32 one (``jax.random.PRNGKey``)."""
    dtype = getattr(rng, "dtype", None)
    if rng is None or (
        dtype is not None and (jnp.issubdtype(dtype, jax.dtypes.prng_key) or dtype == jnp.uint32)
    ):
        return
    raise TypeError(
        f"rng must be a jax.random key (e.g. jax.random.key(0)), got {type(rng).__name__} {rng!r}"
    )


def _mask_object(
    mask: masks.Mask | jax.Array | None, shape: tuple[int, int, int, int], batch: BatchAxes
) -> masks.Mask | None:
    """``mask`` as a :class:`attn.masks.Mask` whose arrays fit ``shape``, whatever runs it."""
    if mask is None:
        return None
    if isinstance(mask, str):
        raise TypeError(
            f"mask must be an attn.masks.Mask, a boolean array or None, got the string {mask!r} "
            f"(a config spec becomes a mask with attn.catalog.get('mask', {mask!r}))"
        )
    if not isinstance(mask, masks.Mask):
        mask = masks.from_array(batch.flatten_pairs(_as_array(mask), "mask"))
    mask.check(shape)
    return mask


def _as_array(x: Any) -> Any:
    """NumPy stays NumPy (static masks skip tiles at trace time); anything else becomes jax."""
    return x if isinstance(x, np.ndarray) else jnp.asarray(x)


def _bias(bias: Any, shape: tuple[int, int, int, int], batch: BatchAxes) -> Any:
    """A validated bias array, or an elementwise rule as given."""
    if bias is None or callable(bias):
        return bias
    return check_bias(batch.flatten_pairs(_as_array(bias), "bias"), shape)


def _with_scale(score_fn: Callable[..., jax.Array], scale: Any) -> Callable[..., jax.Array]:
    """``scaled_dot`` with ``scale`` (jax.nn's logit scale); a score that cannot take it raises."""
    if scale is None:
        return score_fn
    if score_fn is not scores.scaled_dot:
        raise ValueError(
            f"scale={scale!r} is the logit scale of the default score scaled_dot; score "
            f"{fold.describe(score_fn)} sets its own scaling (pass the scale inside the score, "
            "e.g. functools.partial(attn.scores.scaled_dot, scale=...), or leave scale=None)"
        )
    return functools.partial(scores.scaled_dot, scale=scale)


def _check_rate(dropout_rate: Any, rng: Any) -> None:
    """The range of a concrete rate; a traced one (vmapped sweeps) is checked by nobody."""
    rate = concrete(dropout_rate)
    if rate is not None and not (rate.shape == () and 0.0 <= rate < 1.0):
        raise ValueError(f"dropout_rate must be a number in [0, 1), got {dropout_rate!r}")
    if rng is None and (rate is None or rate > 0.0):
        raise ValueError(
            f"dropout_rate={dropout_rate!r} needs an rng (a jax.random key); a traced rate "
            "needs one even when it is 0"
        )


def _check_soft_cap(cap: Any) -> None:
    value = concrete(cap)
    if cap is not None and value is not None and not (value.shape == () and value > 0):
        raise ValueError(f"logits_soft_cap must be a positive number, got {cap!r}")


def _logits_dtype(logits_dtype: Any, q: jax.Array, k: jax.Array) -> jnp.dtype:
    """What the logits accumulate in: ``logits_dtype`` (float32 or float64) or wider inputs'."""
    dtype = jnp.dtype(logits_dtype)
    if dtype not in (jnp.float32, jnp.float64):
        raise ValueError(
            f"logits_dtype must be float32 or float64 (logits accumulate in at least float32), "
            f"got {dtype.name}"
        )
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError("logits_dtype=float64 needs 64-bit jax (jax.config jax_enable_x64)")
    return jnp.result_type(dtype, q.dtype, k.dtype)


def _check_precision(precision: Any, score_fn: Callable[..., jax.Array]) -> None:
    if precision is not None and not fold.foldable(score_fn):
        raise ValueError(
            f"precision={precision!r} applies to the dot products attend computes itself (scores "
            f"dot, scaled_dot, cosine, general); score {fold.describe(score_fn)} computes its "
            "own logits"
        )


def attend(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    score: Callable[..., jax.Array] | str = scores.scaled_dot,
    mask: masks.Mask | jax.Array | None = None,
    bias: jax.Array | Callable[..., jax.Array] | None = None,
    weighting: Callable[..., jax.Array] | str = weightings.softmax,
    dropout_rate: float | jax.Array = 0.0,
    rng: jax.Array | None = None,
    implementation: str = "auto",
    return_weights: bool = False,
    return_lse: bool = False,
    scale: float | jax.Array | None = None,
    logits_soft_cap: float | None = None,
    precision: Any = None,
    logits_dtype: Any = jnp.float32,
    broadcast_dropout: bool = False,
) -> jax.Array | tuple[jax.Array, ...]:
    """Attention: ``weighting(cap(score(q, k) + bias), mask)`` applied to ``v``.

    Args:
      q: queries ``[B, T, N, H]``; also ``[T, N, H]`` (no batch) or ``[..., T, N, H]`` (several
        batch axes, flattened row-major for the implementations and restored on the results).
      k: keys ``[B, S, K, H]`` with ``N % K == 0`` (K=N multi-head, K=1 multi-query), with q's
        leading axes.
      v: values ``[B, S, K, Hv]``, with q's leading axes.
      score: ``(q, k) -> logits [B, N, T, S]`` or a catalog name (``"cosine(temperature=0.05)"``).
      mask: a :class:`attn.masks.Mask` or boolean array broadcastable to ``[B, N, T, S]``
        (``[..., N, T, S]`` for several batch axes); ``True`` = may attend. A Mask's rule sees
        the flattened batch index as ``b``, so its per-example arrays (lengths ``[B]``, ids
        ``[B, T]``) are given flattened too.
      bias: added to the logits (ALiBi, T5): a float array broadcastable to ``[B, N, T, S]``
        (or ``[..., N, T, S]``; differentiable, gradient of its own shape), or an elementwise
        rule ``(b, h, q_idx, kv_idx) -> float`` such as :func:`attn.positional.alibi_rule`.
        The chunked and Pallas kernels evaluate rules and slice arrays per tile.
      weighting: ``(logits, mask) -> weights`` or a catalog name.
      dropout_rate: probability of dropping each weight (needs ``rng``); a Python number or a
        scalar array, which may be traced (e.g. vmapped over trials: then only a concrete rate
        is range-checked, and dropout runs on the dense implementation even at rate 0).
      rng: random key for dropout.
      implementation: ``"dense"`` (the composition, ``[B, N, T, S]`` in memory), ``"chunked"``
        (:func:`attn.kernels.chunked_attention`: O(T + S) memory, skips masked tiles),
        ``"cudnn"`` (``jax.nn.dot_product_attention`` on GPU), ``"pallas"``
        (:func:`attn.kernels.pallas_attention`; interpreted off GPU), ``"ring"``
        (:func:`attn.kernels.ring_attention`: T and S split over the ambient mesh's axis
        ``"context"``, set with ``jax.set_mesh``; softmax, mask and bias rules at global
        positions) or ``"auto"`` (picks by backend, shape and features; never ``"ring"``). A
        combination an implementation cannot honour raises ``ValueError`` naming it.
      return_weights: also return the weights ``[B, N, T, S]`` (float32; for plots).
      return_lse: also return the log-sum-exp of each row's logits ``[B, N, T]`` (softmax-type
        weightings only; ``-inf`` for fully masked rows). Unlike ``jax.nn``'s residual (a
        stop-gradient), it is differentiable: gradients flow through it into q, k and the
        bias, as :func:`attn.merge` needs.
      scale: the logit scale of the default score ``scaled_dot`` (``jax.nn``'s ``scale``;
        ``None``: ``1 / sqrt(H)``). A score with its own scaling (any other) raises.
      logits_soft_cap: ``cap``: logits become ``cap * tanh(logits / cap)`` (Gemma 2, splash's
        ``attn_logits_soft_cap``, tokamax's ``logits_soft_cap``), applied to ``score + bias``
        before the mask and the weighting (a softmax temperature divides the capped logits).
        A ``-inf`` bias is then capped to ``-cap`` like any value: hide keys with a mask.
      precision: ``jax.lax.Precision`` (or its string) of the ``q . k`` and ``weights . v``
        matmuls (flax's ``precision``); only for the scores attend computes (dot, scaled_dot,
        cosine, general). cuDNN takes none and refuses it.
      logits_dtype: what logits accumulate in and the weighting runs in: float32 (default, as
        ``jax.nn``) or float64 (64-bit jax; dense only); float64 inputs stay float64.
      broadcast_dropout: one dropout mask ``[T, S]`` for every example and head (flax's
        ``broadcast_dropout``) instead of one per weight.

    Returns:
      ``out [B, T, N, Hv]`` in the dtype of ``v``, or ``(out, weights)``, ``(out, lse)`` or
      ``(out, weights, lse)`` as asked (with q's leading axes in place of ``B``). A query that
      may see no key outputs 0 with gradient 0. ``T = 0`` gives an empty output and ``S = 0``
      leaves every query without a key (output 0, lse ``-inf``), in every implementation.

    Non-finite inputs at masked positions: the rows of q that a query-length factor hides
    (``padding(q_lengths=...)``) and the rows of k and v that a key-only factor hides
    (``padding(kv_lengths=...)``, a key-only boolean array ``[B | 1, 1, 1, S]``, alone or inside
    ``&``) are replaced by zeros before any implementation runs
    (:func:`attn.masks.clear_hidden`), so a NaN or inf there reaches neither outputs nor
    gradients. Under other masks (causal, windows, segments, other arrays) a position that only
    some queries cannot see is not cleared: its weight is 0 for them, but 0 * NaN is NaN in the
    weighted sum and in the gradients, so a NaN or inf value row can reach the output of every
    query of its example and key head (dense; the tiled kernels spare query tiles that skip
    its key tile), and a non-finite key row their gradients. Such positions must hold finite
    values.

    Masking uses finite fills (:data:`attn.weighting.MASKED_LOGIT`), so for finite inputs runs
    under ``jax.debug_infs(True)`` and ``jax.debug_nans(True)`` stay quiet in dense and chunked
    attention, forward and backward. The exception is ``return_lse=True`` with a fully masked
    row: its lse is ``-inf`` by definition, which ``jax.debug_infs`` reports.
    """
    if implementation not in dispatch.NAMES:
        raise ValueError(f"implementation must be one of {dispatch.NAMES}, got {implementation!r}")
    _check_rate(dropout_rate, rng)
    _check_rng(rng)
    _check_soft_cap(logits_soft_cap)
    # Functions come back as they are; anything else that is not a spec raises TypeError.
    score_fn = _with_scale(catalog.get("score", score), scale)
    weighting_fn = catalog.get("weighting", weighting)
    if return_lse:
        dense.log_normalizer_for(weighting_fn)  # raises for weightings without a log-sum-exp
    _check_precision(precision, score_fn)

    batch = batch_axes(q, k, v)
    q, k, v = (batch.flatten(x) for x in (q, k, v))
    B, T, N, _, S, _ = scores.check_qk(q, k, same_features=False)
    _check_features(score_fn, q, k)
    _check_v(v, k)
    shape = (B, N, T, S)
    mask = _mask_object(mask, shape, batch)
    q, k, v = masks.clear_hidden(mask, q, k, v)
    request = Request(
        q=q,
        k=k,
        v=v,
        score=score_fn,
        weighting=weighting_fn,
        mask=mask,
        bias=_bias(bias, shape, batch),
        dropout_rate=dropout_rate,
        rng=rng,
        return_weights=return_weights,
        return_lse=return_lse,
        logits_soft_cap=logits_soft_cap,
        precision=precision,
        logits_dtype=_logits_dtype(logits_dtype, q, k),
        broadcast_dropout=broadcast_dropout,
    )
    result = dispatch.run(implementation, request)
    if isinstance(result, tuple):
        return tuple(batch.restore(x) for x in result)
    return batch.restore(result)
