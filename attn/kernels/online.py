"""Weightings a chunked kernel applies one key tile at a time.

Layout: in the forward pass logits ``x`` are ``[batch, rows, kv_tile]`` float32 (the kernel's
``[B * K, q_tile * G, kv_tile]``; a Pallas program's tiles have no batch axis, ``[rows,
kv_tile]``); the backward pass works on the transposed tile ``[batch, kv_tile, rows]``, where
every matmul it needs has XLA:CPU's fast operand layout. Row quantities are ``[batch, rows]``
(``[rows]``); ``visible`` is a bool broadcastable to the tile or ``None`` (every entry visible).
Each weighting may take one per-row parameter (``param``): the sink logit of softmax, the bias
of sigmoid, the scale of ReLU. Semantics are those of :mod:`attn.weighting`: masked entries get
weight 0 and gradient 0, a row with nothing visible outputs 0.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from attn.weighting import EMPTY_ROW_MAX, MASKED_LOGIT

__all__ = ["KINDS", "Relu", "Sigmoid", "Softmax", "api_lse"]

Array = jax.Array


def api_lse(lse: Array) -> Array:
    """The kernel's lse rows as attend returns them: ``-inf`` for rows that saw no key, which
    the kernel marks with the finite ``MASKED_LOGIT`` (an inf would trip jax.debug_infs)."""
    return jnp.where(lse == MASKED_LOGIT, -jnp.inf, lse)


def _weighted_values(weights: Array, v_j: Array, precision: Any) -> Array:
    """``weights [..., rows, kv_tile] @ v_j [..., kv_tile, Hv]``: batched in the chunked kernel,
    2-D in a Pallas program (Triton's dot takes no batch axis); at the call's ``precision``."""
    return jnp.matmul(
        weights,
        v_j.astype(weights.dtype),
        precision=precision,
        preferred_element_type=jnp.float32,
    )


@dataclasses.dataclass(frozen=True)
class Softmax:
    """Online softmax (Milakov & Gimelshein 2018; Rabe & Staats 2021; FlashAttention): a running
    row maximum ``m`` and total ``l``; the optional ``param`` is a sink logit (an extra key with
    a zero value), which starts the running state at ``m = sink, l = 1``.

    Fills are finite (see :data:`attn.weighting.MASKED_LOGIT`): ``m`` starts at
    ``EMPTY_ROW_MAX`` and masked logits are ``MASKED_LOGIT``, so their terms underflow to 0 with
    no ``-inf`` and no select on the tile beyond the mask's own."""

    has_lse = True

    def init(self, rows_shape: tuple[int, ...], param: Array | None) -> tuple[Array, Array]:
        if param is None:
            return (
                jnp.full(rows_shape, EMPTY_ROW_MAX, jnp.float32),
                jnp.zeros(rows_shape, jnp.float32),
            )
        return param, jnp.ones(rows_shape, jnp.float32)

    def accumulate(
        self,
        x: Array,
        visible: Array | None,
        state: tuple[Array, Array],
        acc: Array,
        v_j: Array,
        param: Array | None,
        precision: Any = None,
    ) -> tuple[tuple[Array, Array], Array]:
        """One key tile into the running state and weighted sum; ``precision`` is that of the
        weights-by-values matmul (the call's, as for every other matmul)."""
        del param  # the sink entered through init
        m, total = state
        if visible is not None:
            x = jnp.where(visible, x, MASKED_LOGIT)
        # m_new >= EMPTY_ROW_MAX, so a masked term exp(MASKED_LOGIT - m_new) is 0, also in a row
        # that has seen nothing so far.
        m_new = jnp.maximum(m, x.max(axis=-1))
        p = jnp.exp(x - m_new[..., None])
        alpha = jnp.exp(m - m_new)
        total = total * alpha + p.sum(axis=-1)
        acc = acc * alpha[..., None] + _weighted_values(p, v_j, precision)
        return (m_new, total), acc

    def finish(
        self, state: tuple[Array, Array], acc: Array, param: Array | None
    ) -> tuple[Array, Array]:
        """Output ``[..., Hv]`` and log-sum-exp rows (``MASKED_LOGIT`` where nothing is visible:
        :func:`api_lse` makes that ``-inf``)."""
        del param
        m, total = state
        nonempty = total > 0
        safe_total = jnp.where(nonempty, total, 1.0)
        out = acc / safe_total[..., None]
        lse = jnp.where(nonempty, m + jnp.log(safe_total), MASKED_LOGIT)
        return out, lse

    def backward_rows(self, out: Array, lse: Array, dout: Array, dlse: Array | None) -> Any:
        """Per-row values the tile gradients need: the lse (the largest float on empty rows, so
        their recomputed weights are exp(x - lse) = 0) and ``delta = rowsum(dout * out) -
        dlse``."""
        delta = jnp.sum(dout * out, axis=-1)
        if dlse is not None:
            delta = delta - dlse
        return jnp.where(lse == MASKED_LOGIT, -MASKED_LOGIT, lse), delta

    def tile_grads(
        self, x_t: Array, visible: Array | None, rows: Any, param: Array | None, dp_t: Array
    ) -> tuple[Array, Array, Array | None]:
        """Transposed tile ``[batch, kv_tile, rows]``: weights, d logits and the tile's share of
        d param, from ``dp_t = v . dout^T``."""
        del param
        lse, delta = rows
        p = jnp.exp(x_t - lse[:, None, :])
        if visible is not None:
            p = jnp.where(visible, p, 0.0)
        return p, p * (dp_t - delta[:, None, :]), None

    def param_grad(self, param: Array, rows: Any) -> Array:
        """d sink: the sink's weight is ``exp(sink - lse)`` and d lse / d sink is that weight."""
        lse, delta = rows
        return -jnp.exp(param - lse) * delta


@dataclasses.dataclass(frozen=True)
class _Elementwise:
    """Unnormalized weightings: tiles add up independently, nothing runs across tiles."""

    has_lse = False

    def init(self, rows_shape: tuple[int, ...], param: Array | None) -> tuple[()]:
        return ()

    def weights(self, x: Array, param: Array) -> tuple[Array, Array, Array]:
        """Weights, d weights / d x and d weights / d param (``param`` broadcasts to ``x``)."""
        raise NotImplementedError

    def accumulate(
        self,
        x: Array,
        visible: Array | None,
        state: tuple[()],
        acc: Array,
        v_j: Array,
        param: Array,
        precision: Any = None,
    ) -> tuple[tuple[()], Array]:
        w, _, _ = self.weights(x, param[..., None])
        if visible is not None:
            w = jnp.where(visible, w, 0.0)
        return state, acc + _weighted_values(w, v_j, precision)

    def finish(self, state: tuple[()], acc: Array, param: Array) -> tuple[Array, None]:
        return acc, None

    def backward_rows(self, out: Array, lse: None, dout: Array, dlse: None) -> None:
        return None

    def tile_grads(
        self, x_t: Array, visible: Array | None, rows: None, param: Array, dp_t: Array
    ) -> tuple[Array, Array, Array]:
        """As :meth:`Softmax.tile_grads`, on the transposed tile."""
        w, dw_dx, dw_dparam = self.weights(x_t, param[:, None, :])
        dx, dparam = dp_t * dw_dx, dp_t * dw_dparam
        if visible is not None:
            w, dx, dparam = (jnp.where(visible, a, 0.0) for a in (w, dx, dparam))
        return w, dx, dparam.sum(axis=1)


@dataclasses.dataclass(frozen=True)
class Sigmoid(_Elementwise):
    """``sigmoid(x + param)`` with a per-row bias ``param``."""

    def weights(self, x: Array, param: Array) -> tuple[Array, Array, Array]:
        w = jax.nn.sigmoid(x + param)
        slope = w * (1.0 - w)
        return w, slope, slope


@dataclasses.dataclass(frozen=True)
class Relu(_Elementwise):
    """``relu(x) ** power * param`` with a per-row scale ``param``."""

    power: int = 1

    def weights(self, x: Array, param: Array) -> tuple[Array, Array, Array]:
        positive = jnp.maximum(x, 0.0)
        scale = param
        if self.power == 1:
            return positive * scale, jnp.where(x > 0, scale, 0.0), positive
        square = positive * positive
        return square * scale, 2.0 * positive * scale, square


KINDS: dict[str, Softmax | Sigmoid | Relu] = {
    "softmax": Softmax(),
    "sigmoid": Sigmoid(),
    "relu": Relu(1),
    "squared_relu": Relu(2),
}
