"""``attend``: score -> bias -> mask -> weighting -> dropout -> weighted sum of values."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from attn import catalog, masks, scores
from attn import weighting as weightings  # the module; `weighting` is attend's argument
from attn.kernels import dense, dispatch, fold
from attn.kernels.request import Request

__all__ = ["attend", "check_bias"]


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
    mask: masks.Mask | jax.Array | None, shape: tuple[int, int, int, int]
) -> masks.Mask | None:
    """``mask`` as a :class:`attn.masks.Mask` whose arrays fit ``shape``, whatever runs it."""
    if mask is None:
        return None
    if isinstance(mask, str):
        raise TypeError(
            f"mask must be an attn.masks.Mask, a boolean array or None, got the string {mask!r} "
            f"(a config spec becomes a mask with attn.catalog.get('mask', {mask!r}))"
        )
    mask = masks.as_mask(mask)
    mask.check(shape)
    return mask


def _bias(bias: Any, shape: tuple[int, int, int, int]) -> Any:
    """A validated bias array, or an elementwise rule as given."""
    if bias is None or callable(bias):
        return bias
    return check_bias(bias, shape)


def attend(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    score: Callable[..., jax.Array] | str = scores.scaled_dot,
    mask: masks.Mask | jax.Array | None = None,
    bias: jax.Array | Callable[..., jax.Array] | None = None,
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
      bias: added to the logits (ALiBi, T5): a float array broadcastable to ``[B, N, T, S]``, or
        an elementwise rule ``(b, h, q_idx, kv_idx) -> float`` such as
        :func:`attn.positional.alibi_rule`, which fast implementations evaluate per tile.
      weighting: ``(logits, mask) -> weights`` or a catalog name.
      dropout_rate: probability of dropping each weight (needs ``rng``).
      rng: random key for dropout.
      implementation: ``"dense"`` (the composition, ``[B, N, T, S]`` in memory), ``"chunked"``
        (:func:`attn.kernels.chunked_attention`: O(T + S) memory, skips masked tiles),
        ``"cudnn"`` (``jax.nn.dot_product_attention`` on GPU), ``"pallas"``
        (:func:`attn.kernels.pallas_attention`; interpreted off GPU) or ``"auto"`` (picks by
        backend, shape and features). A combination an implementation cannot honour raises
        ``ValueError`` naming it.
      return_weights: also return the weights ``[B, N, T, S]`` (float32; for plots).
      return_lse: also return the log-sum-exp of each row's logits ``[B, N, T]`` (softmax-type
        weightings only; ``-inf`` for fully masked rows). Unlike ``jax.nn``'s residual (a
        stop-gradient), it is differentiable: gradients flow through it into q, k and the
        bias, as :func:`attn.merge` needs.

    Returns:
      ``out [B, T, N, Hv]`` in the dtype of ``v``, or ``(out, weights)``, ``(out, lse)`` or
      ``(out, weights, lse)`` as asked. A query that may see no key outputs 0 with gradient 0.
      ``T = 0`` gives an empty output and ``S = 0`` leaves every query without a key (output
      0, lse ``-inf``), in every implementation.

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
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}")
    if dropout_rate > 0.0 and rng is None:
        raise ValueError(f"dropout_rate={dropout_rate} needs an rng (a jax.random key)")
    _check_rng(rng)
    # Functions come back as they are; anything else that is not a spec raises TypeError.
    score_fn = catalog.get("score", score)
    weighting_fn = catalog.get("weighting", weighting)
    if return_lse:
        dense.log_normalizer_for(weighting_fn)  # raises for weightings without a log-sum-exp

    B, T, N, _, S, _ = scores.check_qk(q, k, same_features=False)
    _check_features(score_fn, q, k)
    _check_v(v, k)
    shape = (B, N, T, S)
    mask = _mask_object(mask, shape)
    q, k, v = masks.clear_hidden(mask, q, k, v)
    request = Request(
        q=q,
        k=k,
        v=v,
        score=score_fn,
        weighting=weighting_fn,
        mask=mask,
        bias=_bias(bias, shape),
        dropout_rate=dropout_rate,
        rng=rng,
        return_weights=return_weights,
        return_lse=return_lse,
    )
    return dispatch.run(implementation, request)
