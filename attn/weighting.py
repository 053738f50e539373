"""Weightings ``(logits, mask) -> weights``: turn scores into attention weights.

Logits are ``[B, N, T, S]`` (any rank >= 1 works with a boolean-array mask; keys are always the
last axis). ``mask`` is ``None``, a boolean array broadcastable to the logits (``True`` = may
attend) or an :class:`attn.masks.Mask` (rank-4 logits only). Weights have the logits' shape.

Every weighting here keeps the same promises:

* The weighting runs in float32 whatever the logits' dtype (float64 stays float64 when x64 is
  on), and the weights come back in that dtype.
* A masked entry gets weight 0 and gradient 0, whatever its logit (even NaN or ``inf``).
  A logit of ``-inf`` (e.g. from an additive bias) counts as masked.
* A fully masked row -- a query that may see no key -- gets weights exactly 0 and gradients 0.
  This differs on purpose from ``jax.nn.softmax`` (NaN) and flax (a uniform average).
* No NaN or Inf appears in the weights or their gradients for any finite visible logits, in
  float32, bfloat16 or float16. The exceptions are arithmetic facts, not masking artefacts:
  ``squared_relu`` overflows float32 for logits beyond about 1.8e19, and visible NaN or ``+inf``
  logits are propagated rather than hidden.
* Masking uses finite fills (:data:`MASKED_LOGIT`, :data:`EMPTY_ROW_MAX`), never ``-inf``, so
  for finite inputs no intermediate value is infinite or NaN and runs under
  ``jax.debug_infs(True)`` / ``jax.debug_nans(True)`` stay quiet. The one ``-inf`` is the value
  :func:`log_normalizer` returns for a fully masked row (the log of an empty sum).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from attn import masks

__all__ = [
    "EMPTY_ROW_MAX",
    "MASKED_LOGIT",
    "entmax15",
    "log_normalizer",
    "relu",
    "sigmoid",
    "softmax",
    "softmax_with_sink",
    "sparsemax",
    "squared_relu",
]

Array = jax.Array
MaskLike = masks.Mask | Array | np.ndarray | None
Param = float | Array | np.ndarray

# Finite stand-ins for -inf (which jax.debug_infs reports wherever it appears): the logit of a
# masked entry and the starting maximum of a row, i.e. the maximum of a row that has no visible
# entry. exp(MASKED_LOGIT - EMPTY_ROW_MAX) underflows to 0 in float32 and float64, so a masked
# entry weighs nothing even in a row that sees nothing; visible logits are assumed above
# EMPTY_ROW_MAX (about -1.7e38). Used by the kernels too.
MASKED_LOGIT = float(np.finfo(np.float32).min)
EMPTY_ROW_MAX = MASKED_LOGIT / 2


# --------------------------------------------------------------------------- validation


def _prepare(logits: Any, mask: MaskLike, fn: str) -> tuple[Array, Array]:
    """Validate; return the logits in the compute dtype and the visibility ``[..., S]`` (mask
    and logit != -inf, broadcast to the logits' shape)."""
    if not hasattr(logits, "dtype"):
        logits = np.asarray(logits)
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise TypeError(f"{fn}: logits must be a float array, got dtype {logits.dtype}")
    if logits.ndim < 1:
        raise ValueError(f"{fn}: logits must have rank >= 1 (keys on the last axis), got shape ()")
    x = jnp.asarray(logits)  # first, so float64 input without x64 quietly becomes float32
    x = x.astype(jnp.result_type(x.dtype, jnp.float32))
    visible = x != -jnp.inf
    mask_array = _mask_array(mask, tuple(x.shape), fn)
    if mask_array is not None:
        visible = visible & mask_array
    return x, visible


def _mask_array(mask: MaskLike, shape: tuple[int, ...], fn: str) -> Array | None:
    if mask is None:
        return None
    if isinstance(mask, masks.Mask):
        if len(shape) != 4:
            raise ValueError(
                f"{fn}: a Mask object needs rank-4 logits [B, N, T, S], got logits of shape "
                f"{shape}; pass a boolean array mask instead"
            )
        mask = masks.as_array(mask, shape)
    elif not hasattr(mask, "dtype"):
        mask = np.asarray(mask)
    if mask.dtype != bool:
        raise TypeError(f"{fn}: mask must be a boolean array (True = may attend), got {mask.dtype}")
    if _broadcast_shape(mask.shape, shape) != shape:
        raise ValueError(
            f"{fn}: mask of shape {tuple(mask.shape)} does not broadcast to logits of shape {shape}"
        )
    return mask


def _broadcast_shape(*shapes: tuple[int, ...]) -> tuple[int, ...] | None:
    try:
        return tuple(jnp.broadcast_shapes(*shapes))
    except ValueError:
        return None


def _param(value: Param, x: Array, name: str, fn: str, *, per_key: bool) -> Array:
    """A scalar, a per-head ``[N]`` array (rank-4 logits) or an array broadcastable to the logits
    (``per_key``) or to ``logits[..., :1]``; cast to the compute dtype."""
    value = jnp.asarray(value)
    if not (jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)):
        raise TypeError(f"{fn}: {name} must be a real number or array, got dtype {value.dtype}")
    value = value.astype(x.dtype)
    if x.ndim == 4 and value.ndim == 1 and value.shape[0] == x.shape[1]:
        value = value.reshape(1, -1, 1, 1)
    target = tuple(x.shape) if per_key else (*x.shape[:-1], 1)
    if _broadcast_shape(value.shape, target) != target:
        head = f" a per-head [N] = [{x.shape[1]}] array," if x.ndim == 4 else ""
        raise ValueError(
            f"{fn}: {name} of shape {tuple(value.shape)} must be a scalar,{head} or broadcast to "
            f"{target} (logits of shape {tuple(x.shape)})"
        )
    return value


def _check_positive(value: Param, name: str, fn: str) -> None:
    try:
        concrete = np.asarray(value)
    except jax.errors.TracerArrayConversionError:
        return  # a traced value cannot be checked; jit users own that promise
    if not np.all(concrete > 0):
        raise ValueError(f"{fn}: {name} must be > 0, got {value!r}")


# --------------------------------------------------------------------------- softmax family


def _exp_terms(
    x: Array, visible: Array, temperature: Param, sink: Array | None
) -> tuple[Array, Array, Array]:
    """``exp((x - m) / t)`` on visible entries (0 elsewhere), the row total including the sink
    term, and the row shift ``m`` (finite, gradient-free; ``EMPTY_ROW_MAX`` for an empty row)."""
    # initial: zero keys (S = 0) is a fully masked row, not an error.
    row_max = jnp.max(
        jnp.where(visible, x, MASKED_LOGIT), axis=-1, keepdims=True, initial=EMPTY_ROW_MAX
    )
    if sink is not None:
        row_max = jnp.maximum(row_max, sink)
    # Any per-row constant gives the same weights, so the shift carries no gradient.
    shift = jax.lax.stop_gradient(row_max.astype(x.dtype))
    # Masked entries become the shift before subtracting: whatever their logit (NaN, inf), and
    # in empty rows too, nothing non-finite is computed. Subtracting before dividing keeps
    # (x - m) / t <= 0 even when x / t would overflow.
    scaled = (jnp.where(visible, x, shift) - shift) / temperature
    terms = jnp.where(visible, jnp.exp(scaled), 0.0)
    total = terms.sum(axis=-1, keepdims=True)
    if sink is not None:
        total = total + jnp.exp((sink - shift) / temperature)
    return terms, total, shift


def softmax(logits: Array, mask: MaskLike = None, *, temperature: Param = 1.0) -> Array:
    """Softmax over the keys (last axis) of ``logits / temperature``, visible entries only.

    Args:
      logits: float array ``[B, N, T, S]`` (or any rank >= 1, keys last).
      mask: boolean array broadcastable to ``logits`` or a :class:`attn.masks.Mask`.
      temperature: > 0; a scalar, per-head ``[N]`` or broadcastable to ``logits[..., :1]``.

    Returns:
      float32 weights shaped like ``logits``; each row sums to 1, or is all 0 when fully masked.
    """
    x, visible = _prepare(logits, mask, "softmax")
    _check_positive(temperature, "temperature", "softmax")
    temperature = _param(temperature, x, "temperature", "softmax", per_key=False)
    terms, total, _ = _exp_terms(x, visible, temperature, None)
    # An empty row has total 0 and terms 0; dividing by 1 keeps it 0 with a 0 gradient.
    return terms / jnp.where(total > 0, total, 1.0)


def softmax_with_sink(logits: Array, mask: MaskLike = None, *, sink_logit: Param = 0.0) -> Array:
    """Attention sink ("softmax + 1"): ``w_i = exp(x_i) / (exp(sink) + sum_j exp(x_j))``.

    The sink is an extra, always-visible key with logit ``sink_logit`` and a zero value, so a
    row can put weight on "nothing" and its weights sum to less than 1. ``sink_logit = 0`` is
    Miller's "softmax + 1"; a learned per-head sink is ``sink_logit`` of shape ``[N]``.

    Args:
      logits: float array ``[B, N, T, S]`` (or any rank >= 1, keys last).
      mask: boolean array broadcastable to ``logits`` or a :class:`attn.masks.Mask`.
      sink_logit: a scalar, per-head ``[N]`` (read as ``[1, N, 1, 1]``) or broadcastable to
        ``logits[..., :1]``; differentiable.

    Returns:
      float32 weights shaped like ``logits``, rows summing to < 1 (0 when fully masked).
    """
    x, visible = _prepare(logits, mask, "softmax_with_sink")
    sink = _param(sink_logit, x, "sink_logit", "softmax_with_sink", per_key=False)
    terms, total, _ = _exp_terms(x, visible, 1.0, sink)
    return terms / jnp.where(total > 0, total, 1.0)


def log_normalizer(
    logits: Array,
    mask: MaskLike = None,
    *,
    temperature: Param = 1.0,
    sink_logit: Param | None = None,
) -> Array:
    """The log-sum-exp residual of each row: ``log(sum_j exp(x_j / t))`` over visible keys.

    With ``sink_logit`` the sink counts as one more key: ``log(exp(sink / t) + sum_j exp(x_j /
    t))``. Then ``softmax(...) == exp(x / t - log_normalizer(...))`` on visible entries, which is
    what chunked kernels store to recompute the weights.

    Returns:
      float32 ``logits.shape[:-1]`` (``[B, N, T]``); ``-inf`` for a fully masked row without a
      sink (its gradient is 0), finite with one.
    """
    x, visible = _prepare(logits, mask, "log_normalizer")
    _check_positive(temperature, "temperature", "log_normalizer")
    temperature = _param(temperature, x, "temperature", "log_normalizer", per_key=False)
    sink = None
    if sink_logit is not None:
        sink = _param(sink_logit, x, "sink_logit", "log_normalizer", per_key=False)
    _, total, shift = _exp_terms(x, visible, temperature, sink)
    nonempty = total > 0
    # Empty rows use 0 and 1 for the shift and the total (EMPTY_ROW_MAX / t could overflow).
    lse = jnp.where(nonempty, shift, 0.0) / temperature + jnp.log(jnp.where(nonempty, total, 1.0))
    return jnp.where(nonempty, lse, -jnp.inf)[..., 0]


# --------------------------------------------------------------------------- sparse maps

# After shifting the row maximum to 0, both thresholds below lie in [-1, 0) (the top weight is
# at most 1), so entries under -1 are never in the support. Clipping them to -2 changes no weight
# but keeps the cumulative sums small: no overflow for logits near the float limits.
_CLIP = -2.0
# Invisible entries sort after every (clipped) visible one; the support size is additionally
# capped by the number of visible entries, so this value never enters a weight.
_INVISIBLE = -3.0


def _sorted_rows(z: Array, visible: Array, scale: float) -> tuple[Array, Array, Array, Array]:
    """Shift each row's visible max to 0, scale and clip; return the row values ``u``, the
    same sorted in descending order, ranks ``1..S`` and whether each rank is a visible entry."""
    count = visible.sum(axis=-1, keepdims=True)
    row_max = jnp.max(
        jnp.where(visible, z, MASKED_LOGIT), axis=-1, keepdims=True, initial=MASKED_LOGIT
    )
    shift = jnp.where(count > 0, row_max, 0.0)
    # Masked entries become the shift first, so nothing non-finite is computed for them.
    u = jnp.where(
        visible, jnp.maximum((jnp.where(visible, z, shift) - shift) * scale, _CLIP), _INVISIBLE
    )
    u_sorted = -jnp.sort(-u, axis=-1)
    rank = jnp.arange(1, z.shape[-1] + 1, dtype=z.dtype)
    return u, u_sorted, rank, rank <= count


def _take_at_support(values: Array, support: Array) -> Array:
    index = jnp.maximum(support - 1, 0).astype(jnp.int32)
    return jnp.take_along_axis(values, index, axis=-1)


def _sparsemax_forward(z: Array, visible: Array) -> Array:
    u, u_sorted, rank, in_range = _sorted_rows(z, visible, 1.0)
    cumsum = jnp.cumsum(u_sorted, axis=-1)
    # Rank k is in the support iff u_(k) > (sum_{j<=k} u_(j) - 1) / k.
    in_support = (1.0 + rank * u_sorted > cumsum) & in_range
    support = in_support.sum(axis=-1, keepdims=True)
    threshold = (_take_at_support(cumsum, support) - 1.0) / jnp.maximum(support, 1)
    return jnp.where(visible, jnp.maximum(u - threshold, 0.0), 0.0)


def _entmax15_forward(z: Array, visible: Array) -> tuple[Array, Array]:
    """Weights and their square roots (the Jacobian's ``s``)."""
    u, u_sorted, rank, in_range = _sorted_rows(z, visible, 0.5)
    # For support size k the threshold solves sum_{j<=k} (u_(j) - tau)^2 = 1.
    mean = jnp.cumsum(u_sorted, axis=-1) / rank
    mean_sq = jnp.cumsum(u_sorted * u_sorted, axis=-1) / rank
    spread = rank * (mean_sq - mean * mean)
    tau = mean - jnp.sqrt(jnp.maximum((1.0 - spread) / rank, 0.0))
    in_support = (tau <= u_sorted) & in_range
    support = in_support.sum(axis=-1, keepdims=True)
    root = jnp.where(visible, jnp.maximum(u - _take_at_support(tau, support), 0.0), 0.0)
    return root * root, root


def _projection_tangent(s: Array, dz: Array) -> Array:
    """``J dz`` for ``J = diag(s) - s s^T / sum(s)``; 0 for rows with an empty support."""
    total = s.sum(axis=-1, keepdims=True)
    mean = (s * dz).sum(axis=-1, keepdims=True) / jnp.where(total > 0, total, 1.0)
    return s * (dz - mean)


@jax.custom_jvp
def _sparsemax(z: Array, visible: Array) -> Array:
    return _sparsemax_forward(z, visible)


@_sparsemax.defjvp
def _sparsemax_jvp(primals: tuple[Array, Array], tangents: tuple) -> tuple[Array, Array]:
    (z, visible), (dz, _) = primals, tangents
    p = _sparsemax_forward(z, visible)
    support = (p > 0).astype(p.dtype)
    return p, _projection_tangent(support, jnp.where(visible, dz, 0.0))


@jax.custom_jvp
def _entmax15(z: Array, visible: Array) -> Array:
    return _entmax15_forward(z, visible)[0]


@_entmax15.defjvp
def _entmax15_jvp(primals: tuple[Array, Array], tangents: tuple) -> tuple[Array, Array]:
    (z, visible), (dz, _) = primals, tangents
    p, root = _entmax15_forward(z, visible)
    return p, _projection_tangent(root, jnp.where(visible, dz, 0.0))


def sparsemax(logits: Array, mask: MaskLike = None) -> Array:
    """Sparsemax (Martins & Astudillo 2016): the Euclidean projection of each row of visible
    logits onto the probability simplex, ``p = max(x - tau, 0)`` with ``sum(p) = 1``.

    Exact (sort-based); gradients use the closed-form Jacobian ``diag(s) - s s^T / |S|`` with
    ``s`` the support indicator.

    Returns:
      float32 weights shaped like ``logits``: rows sum to 1 (0 when fully masked), usually with
      exact zeros.
    """
    x, visible = _prepare(logits, mask, "sparsemax")
    return _sparsemax(x, visible)


def entmax15(logits: Array, mask: MaskLike = None) -> Array:
    """1.5-entmax (Peters et al. 2019): ``p = max(x / 2 - tau, 0) ** 2`` with ``sum(p) = 1``,
    between softmax (dense) and sparsemax (sparser).

    Exact (sort-based); gradients use the closed-form Jacobian ``diag(s) - s s^T / sum(s)`` with
    ``s = sqrt(p)``.

    Returns:
      float32 weights shaped like ``logits``: rows sum to 1 (0 when fully masked).
    """
    x, visible = _prepare(logits, mask, "entmax15")
    return _entmax15(x, visible)


# --------------------------------------------------------------------------- elementwise


def sigmoid(logits: Array, mask: MaskLike = None, *, bias: Param | None = None) -> Array:
    """Sigmoid attention (Ramapuram et al. 2024): ``sigmoid(x + bias)`` per entry, unnormalized.

    Args:
      bias: scalar, per-head ``[N]`` or broadcastable to ``logits``; ``None`` means
        ``-log(S)`` with ``S = logits.shape[-1]``, which keeps early rows near a total of 1.

    Returns:
      float32 weights in ``[0, 1]`` shaped like ``logits``; 0 where masked.
    """
    x, visible = _prepare(logits, mask, "sigmoid")
    if bias is None:
        bias = -math.log(max(x.shape[-1], 1))
    bias = _param(bias, x, "bias", "sigmoid", per_key=True)
    # Sanitize before the nonlinearity: sigmoid' at a NaN masked logit would poison the gradient.
    safe = jnp.where(visible, x, 0.0)
    return jnp.where(visible, jax.nn.sigmoid(safe + bias), 0.0)


def _relu_family(logits: Array, mask: MaskLike, scale: Param | None, fn: str, power: int) -> Array:
    x, visible = _prepare(logits, mask, fn)
    if scale is None:
        scale = 1.0 / max(x.shape[-1], 1)
    scale = _param(scale, x, "scale", fn, per_key=True)
    positive = jnp.maximum(jnp.where(visible, x, 0.0), 0.0)
    value = positive if power == 1 else positive * positive
    return jnp.where(visible, value * scale, 0.0)


def relu(logits: Array, mask: MaskLike = None, *, scale: Param | None = None) -> Array:
    """ReLU attention (Wortsman et al. 2023): ``relu(x) * scale``, unnormalized.

    Args:
      scale: scalar, per-head ``[N]`` or broadcastable to ``logits``; ``None`` means ``1 / S``
        with ``S = logits.shape[-1]``.

    Returns:
      float32 weights >= 0 shaped like ``logits``; 0 where masked.
    """
    return _relu_family(logits, mask, scale, "relu", 1)


def squared_relu(logits: Array, mask: MaskLike = None, *, scale: Param | None = None) -> Array:
    """Squared-ReLU attention: ``relu(x) ** 2 * scale``, unnormalized (``scale`` as in
    :func:`relu`, default ``1 / S``).

    Returns:
      float32 weights >= 0 shaped like ``logits``; 0 where masked. Overflows float32 for
      logits beyond about 1.8e19, as the square does.
    """
    return _relu_family(logits, mask, scale, "squared_relu", 2)
