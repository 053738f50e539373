"""``attend``: score -> bias -> mask -> weighting -> dropout -> weighted sum of values."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from attn import catalog, masks, scores
from attn import weighting as weightings  # the module; `weighting` is attend's argument

__all__ = ["attend", "check_bias"]

IMPLEMENTATIONS = ("auto", "dense")


def check_bias(bias: jax.Array, shape: tuple[int, int, int, int]) -> jax.Array:
    """Validate an additive score bias broadcastable to ``shape = (B, N, T, S)``."""
    bias = jnp.asarray(bias)
    if not jnp.issubdtype(bias.dtype, jnp.floating):
        raise TypeError(f"bias must be a float array, got dtype {bias.dtype}")
    if bias.ndim > 4 or any(
        b not in (1, s) for b, s in zip(bias.shape[::-1], shape[::-1], strict=False)
    ):
        raise ValueError(f"bias of shape {bias.shape} does not broadcast to [B, N, T, S] = {shape}")
    return bias


def _check_v(v: jax.Array, k: jax.Array) -> None:
    if not hasattr(v, "ndim") or v.ndim != 4:
        raise ValueError(f"v must have rank 4 ([B, S, K, Hv]), got {getattr(v, 'shape', v)}")
    if not jnp.issubdtype(v.dtype, jnp.floating):
        raise TypeError(f"v must be a float array, got dtype {v.dtype}")
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(f"k and v must agree on [B, S, K]: k {k.shape}, v {v.shape}")


def _log_normalizer_for(weighting_fn: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    """The log-sum-exp residual that goes with a softmax-type weighting (with its settings)."""
    base, keywords = weighting_fn, {}
    if isinstance(weighting_fn, functools.partial):
        base, keywords = weighting_fn.func, dict(weighting_fn.keywords)
    if base is weightings.softmax:
        return functools.partial(weightings.log_normalizer, **keywords)
    if base is weightings.softmax_with_sink:
        keywords.setdefault("sink_logit", 0.0)
        return functools.partial(weightings.log_normalizer, **keywords)
    raise ValueError(
        f"return_lse: the log-sum-exp residual exists only for softmax and softmax_with_sink "
        f"weightings, got {weighting_fn!r}"
    )


def _dropout(weights: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
    if rng is None:
        raise ValueError(f"dropout_rate={rate} needs an rng (a jax.random key)")
    keep = jax.random.bernoulli(rng, 1.0 - rate, weights.shape)
    return jnp.where(keep, weights / (1.0 - rate), 0.0)


def attend(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    score: Callable[..., jax.Array] | str = scores.scaled_dot,
    mask: masks.Mask | jax.Array | None = None,
    bias: jax.Array | None = None,
    weighting: Callable[..., jax.Array] | str = weightings.softmax,
    dropout_rate: float = 0.0,
    rng: jax.Array | None = None,
    implementation: str = "auto",
    return_weights: bool = False,
    return_lse: bool = False,
) -> jax.Array | tuple[jax.Array, ...]:
    """Attention: ``weighting(score(q, k) + bias, mask)`` applied to ``v``.

    Args:
      q: queries ``[B, T, N, H]``.
      k: keys ``[B, S, K, H]`` with ``N % K == 0`` (K=N multi-head, K=1 multi-query).
      v: values ``[B, S, K, Hv]``.
      score: ``(q, k) -> logits [B, N, T, S]`` or a catalog name (``"cosine(temperature=0.05)"``).
      mask: a :class:`attn.masks.Mask` or boolean array broadcastable to ``[B, N, T, S]``;
        ``True`` = may attend.
      bias: float array broadcastable to ``[B, N, T, S]`` added to the logits (ALiBi, T5).
      weighting: ``(logits, mask) -> weights`` or a catalog name.
      dropout_rate: probability of dropping each weight (needs ``rng``).
      rng: random key for dropout.
      implementation: ``"auto"`` or ``"dense"``.
      return_weights: also return the weights ``[B, N, T, S]`` (float32; for plots).
      return_lse: also return the log-sum-exp of each row's logits ``[B, N, T]`` (softmax-type
        weightings only; ``-inf`` for fully masked rows).

    Returns:
      ``out [B, T, N, Hv]`` in the dtype of ``v``, or ``(out, weights)``, ``(out, lse)`` or
      ``(out, weights, lse)`` as asked. A query that may see no key outputs 0 with gradient 0.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}")
    score_fn = catalog.get("score", score) if isinstance(score, str) else score
    weighting_fn = catalog.get("weighting", weighting) if isinstance(weighting, str) else weighting

    B, T, N, _, S, K = scores.check_qk(q, k, same_features=False)
    _check_v(v, k)
    shape = (B, N, T, S)
    logits_bnts = score_fn(q, k)
    if logits_bnts.shape != shape:
        raise ValueError(f"score {score_fn!r} returned {logits_bnts.shape}, expected {shape}")
    if bias is not None:
        logits_bnts = logits_bnts + check_bias(bias, shape)
    mask_bnts = masks.as_array(mask, shape)

    weights_bnts = weighting_fn(logits_bnts, mask_bnts)
    returned_weights = weights_bnts
    if dropout_rate > 0.0:
        weights_bnts = _dropout(weights_bnts, dropout_rate, rng)

    dtype = scores.accumulation_dtype(weights_bnts, v)
    Hv = v.shape[-1]
    out_btkgh = jnp.einsum(
        "bkgts,bskh->btkgh",
        weights_bnts.reshape(B, K, N // K, T, S).astype(dtype),
        v,
        preferred_element_type=dtype,
    )
    out = out_btkgh.reshape(B, T, N, Hv).astype(v.dtype)

    extras: list[Any] = []
    if return_weights:
        extras.append(returned_weights)
    if return_lse:
        extras.append(_log_normalizer_for(weighting_fn)(logits_bnts, mask_bnts))
    return (out, *extras) if extras else out
