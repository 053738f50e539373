"""The flash-style kernel itself: online weighting over key tiles with a custom VJP.

The forward pass walks the visited (query tile, key tile) pairs of a :class:`TilePlan` with
``lax.scan``, keeping per query row only a running state (for softmax: maximum and total); the
backward pass recomputes each tile's logits from q, k and the saved log-sum-exp (FlashAttention-2's
scheme), so neither pass holds a ``[T, S]`` array. Masks and score biases are evaluated per tile
from their elementwise rules, bias arrays sliced per tile (:mod:`attn.kernels.bias_tiles`).
A tile's logits are ``q . k + bias``, soft-capped as ``cap * tanh(logits / cap)`` when asked.
Inputs come in the kernel's layout (see :class:`Static`); :func:`attn.kernels.chunked_attention`
is the user-facing entry point.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from attn.kernels import bias_tiles, rules
from attn.kernels.tiling import TilePlan

__all__ = ["Static", "kernel", "with_backward"]

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Static:
    """Everything the traced kernel needs that is not an array (hashable).

    Array layout, chosen so every tile operation is a plain 3-D array op (XLA:CPU copies tiles
    whose shapes have size-1 axes in differing places): q ``[B * K, T * G, H]`` with row
    ``t * G + g`` for query t, head ``k * G + g``; k ``[B * K, S, H]``; v ``[B * K, S, Hv]``;
    per-row values ``[B * K, T * G]``; lengths padded to whole tiles. A bias array keeps its
    own shape ``[B | 1, N | 1, T | 1, S | 1]`` (unpadded).
    """

    plan: TilePlan
    kind: Any  # an attn.kernels.online weighting
    dims: tuple[int, int, int]  # (B, N, K)
    kv_len: int  # keys at or past this index are padding
    mask: rules.Rebuild | None
    bias: rules.Rebuild | None
    soft_cap: float | None = None  # logits -> cap * tanh(logits / cap)
    precision: Any = None  # of every matmul (lax.Precision, a string or None)

    @property
    def rows(self) -> int:
        """Rows of a query tile: ``q_tile`` queries times ``G`` heads per key head."""
        _, N, K = self.dims
        return self.plan.q_tile * (N // K)


def _slice(x: Array, start: Array, size: int, axis: int = 1) -> Array:
    return lax.dynamic_slice_in_dim(x, start, size, axis)


def _update(x: Array, tile: Array, start: Array, axis: int = 1) -> Array:
    return lax.dynamic_update_slice_in_dim(x, tile.astype(x.dtype), start, axis)


def _add(x: Array, tile: Array, start: Array, axis: int = 1) -> Array:
    return _update(x, _slice(x, start, tile.shape[axis], axis) + tile, start, axis)


class _Tiles:
    """Per-tile logits pieces for one call."""

    def __init__(self, st: Static, mask_arrays: list[Array]):
        self.st = st
        self.mask = None if st.mask is None else st.mask(mask_arrays)

    def _starts(self, i: Array, j: Array) -> tuple[Array, Array]:
        return i * self.st.plan.q_tile, j * self.st.plan.kv_tile

    def _values(self, rule: rules.Rule, i: Array, j: Array) -> Array:
        plan = self.st.plan
        q0, kv0 = self._starts(i, j)
        return rules.tile_values(rule, *self.st.dims, q0, plan.q_tile, kv0, plan.kv_tile)

    def bias(self, bias_arrays: list[Array], i: Array, j: Array) -> Array:
        return self._values(self.st.bias(bias_arrays), i, j).astype(jnp.float32)

    def window(self, bias_values: Array, i: Array, j: Array) -> bias_tiles.Window:
        """Where tile ``(i, j)`` sits in the bias array ``bias_values``."""
        q0, kv0 = self._starts(i, j)
        return bias_tiles.window(
            bias_values.shape, q0, self.st.plan.q_tile, kv0, self.st.plan.kv_tile
        )

    def arranged(self, piece: Array, where: bias_tiles.Window) -> Array:
        """A bias window from :func:`attn.kernels.bias_tiles.read` in the tile's layout."""
        B, N, K = self.st.dims
        piece = bias_tiles.arrange(piece, where).astype(jnp.float32)
        return rules.kernel_layout(piece, B, N, K, self.st.plan.q_tile, self.st.plan.kv_tile)

    def visible(self, i: Array, j: Array) -> Array:
        """Bool broadcastable to the tile ``[B * K, rows, kv_tile]``, rank 3."""
        kv_idx = j * self.st.plan.kv_tile + jnp.arange(self.st.plan.kv_tile)
        visible = (kv_idx < self.st.kv_len)[None, None, :]
        if self.mask is not None:
            visible = visible & self._values(self.mask.rule, i, j)
        return visible

    def scores(self, q_i: Array, k_j: Array) -> Array:
        return jnp.einsum(
            "brh,bsh->brs",
            q_i,
            k_j,
            precision=self.st.precision,
            preferred_element_type=jnp.float32,
        )


def soft_cap(x: Array, cap: float | None) -> tuple[Array, Array | None]:
    """``cap * tanh(x / cap)`` and its slope ``1 - tanh(x / cap) ** 2`` (``x`` and ``None``
    without a cap)."""
    if cap is None:
        return x, None
    tanh = jnp.tanh(x / cap)
    return cap * tanh, 1.0 - tanh * tanh


def _scan_pairs(step: Any, carry: Any, plan: TilePlan, *, kv_major: bool) -> Any:
    """Run ``step`` over the full pairs (no mask) and then the partial pairs (mask evaluated)."""
    for partial in (False, True):
        pairs = plan.pairs("partial" if partial else "full", kv_major=kv_major)
        if len(pairs):
            carry, _ = lax.scan(functools.partial(step, partial), carry, pairs)
    return carry


def _forward(
    st: Static,
    q: Array,
    k: Array,
    v: Array,
    mask_arrays: list[Array],
    bias_arrays: list[Array],
    bias_values: Array | None,
    param: Array | None,
    visit: Array | None,
) -> tuple[Array, Array | None]:
    kind, rows, tk = st.kind, st.rows, st.plan.kv_tile
    tiles = _Tiles(st, mask_arrays)
    acc = jnp.zeros((*q.shape[:2], v.shape[-1]), jnp.float32)
    state = kind.init(q.shape[:2], param)

    def step(partial: bool, carry: Any, pair: Array) -> tuple[Any, None]:
        acc, state = carry
        i, j = pair[0], pair[1]
        r0, j0 = i * rows, j * tk
        acc_i = _slice(acc, r0, rows)
        state_i = jax.tree.map(lambda a: _slice(a, r0, rows), state)
        param_i = None if param is None else _slice(param, r0, rows)

        def compute() -> Any:
            x = tiles.scores(_slice(q, r0, rows), _slice(k, j0, tk))
            if st.bias is not None:
                x = x + tiles.bias(bias_arrays, i, j)
            if bias_values is not None:
                where = tiles.window(bias_values, i, j)
                x = x + tiles.arranged(bias_tiles.read(bias_values, where), where)
            x, _ = soft_cap(x, st.soft_cap)
            visible = tiles.visible(i, j) if partial else None
            v_j = _slice(v, j0, tk)
            return kind.accumulate(x, visible, state_i, acc_i, v_j, param_i, st.precision)

        if visit is None:
            state_i, acc_i = compute()
        else:
            # The branch holds only tiles, so skipping copies no full-size buffer.
            state_i, acc_i = lax.cond(visit[i, j], compute, lambda: (state_i, acc_i))
        acc = _update(acc, acc_i, r0)
        state = jax.tree.map(lambda a, t: _update(a, t, r0), state, state_i)
        return (acc, state), None

    acc, state = _scan_pairs(step, (acc, state), st.plan, kv_major=False)
    return kind.finish(state, acc, param)


def _backward(
    st: Static, residuals: tuple[Any, ...], cotangents: tuple[Array, Array | None]
) -> tuple[Any, ...]:
    """FlashAttention-2's backward pass over the same tiles, key-tile-major. Tiles are computed
    transposed (``[B * K, kv_tile, rows]``) and dq as dq^T from each key tile transposed: then
    all five matmuls have operand layouts XLA:CPU runs at full speed (a matmul that contracts
    the first axis of its left operand runs about 3x slower). Transposing per tile rather than
    keeping a transposed copy of k saves an ``[S, H]`` buffer per key head at no cost in time."""
    q, k, v, mask_arrays, bias_arrays, bias_values, param, visit, out, lse = residuals
    dout, dlse = cotangents
    kind, rows, tk = st.kind, st.rows, st.plan.kv_tile
    tiles = _Tiles(st, mask_arrays)
    row_values = kind.backward_rows(out, lse, dout, dlse)
    # Integer leaves of the bias rule (offsets) get no gradient; float ones (slopes, tables) do.
    learned = [jnp.issubdtype(a.dtype, jnp.inexact) for a in bias_arrays]
    floats = [a for a, f in zip(bias_arrays, learned, strict=True) if f]

    def bias_t(float_arrays: list[Array], i: Array, j: Array) -> Array:
        given = iter(float_arrays)
        merged = [next(given) if f else a for a, f in zip(bias_arrays, learned, strict=True)]
        return full_t(tiles.bias(merged, i, j))

    def full_t(tile: Array) -> Array:
        # Full tile shape, so a pullback takes d logits as they are and sums what broadcast.
        return jnp.swapaxes(jnp.broadcast_to(tile, (q.shape[0], rows, tk)), 1, 2)

    zeros = functools.partial(jnp.zeros, dtype=jnp.float32)
    matmul = functools.partial(jnp.einsum, precision=st.precision)
    carry = {
        "dq_t": zeros((q.shape[0], q.shape[2], q.shape[1])),
        "dk": zeros(k.shape),
        "dv": zeros(v.shape),
        "dbias": [jnp.zeros_like(a) for a in floats],
        "dbias_values": None if bias_values is None else zeros(bias_values.shape),
        "dparam": None if param is None or kind.has_lse else zeros(param.shape),
    }
    f32 = jnp.float32

    def step(partial: bool, carry: dict[str, Any], pair: Array) -> tuple[dict[str, Any], None]:
        i, j = pair[0], pair[1]
        r0, j0 = i * rows, j * tk
        q_i, dout_i = _slice(q, r0, rows).astype(f32), _slice(dout, r0, rows).astype(f32)
        k_j, v_j = _slice(k, j0, tk).astype(f32), _slice(v, j0, tk).astype(f32)
        rows_i = jax.tree.map(lambda a: _slice(a, r0, rows), row_values)
        param_i = None if param is None else _slice(param, r0, rows)
        where = None if bias_values is None else tiles.window(bias_values, i, j)

        def compute() -> dict[str, Any]:
            x_t = matmul("bsh,brh->bsr", k_j, q_i)
            pullback = values_pullback = None
            if st.bias is not None:
                bias, pullback = jax.vjp(lambda fl: bias_t(fl, i, j), floats)
                x_t = x_t + bias
            if bias_values is not None:
                piece = bias_tiles.read(bias_values, where)
                bias, values_pullback = jax.vjp(
                    lambda p: full_t(tiles.arranged(p, where)), piece.astype(f32)
                )
                x_t = x_t + bias
            x_t, slope_t = soft_cap(x_t, st.soft_cap)
            visible = jnp.swapaxes(tiles.visible(i, j), 1, 2) if partial else None
            dp_t = matmul("bsh,brh->bsr", v_j, dout_i)
            w_t, ds_t, dparam_i = kind.tile_grads(x_t, visible, rows_i, param_i, dp_t)
            if slope_t is not None:
                ds_t = ds_t * slope_t  # d logits before the cap
            return {
                "dq_t": matmul("bhs,bsr->bhr", jnp.swapaxes(k_j, 1, 2), ds_t),
                "dk": matmul("bsr,brh->bsh", ds_t, q_i),
                "dv": matmul("bsr,brh->bsh", w_t, dout_i),
                "dbias": [] if pullback is None else pullback(ds_t)[0],
                "dbias_values": None if values_pullback is None else values_pullback(ds_t)[0],
                "dparam": dparam_i,
            }

        if visit is None:
            grads = compute()
        else:
            grads = lax.cond(
                visit[i, j],
                compute,
                lambda: jax.tree.map(jnp.zeros_like, jax.eval_shape(compute)),
            )
        carry = {
            "dq_t": _add(carry["dq_t"], grads["dq_t"], r0, 2),
            "dk": _add(carry["dk"], grads["dk"], j0),
            "dv": _add(carry["dv"], grads["dv"], j0),
            "dbias": [a + g for a, g in zip(carry["dbias"], grads["dbias"], strict=True)],
            "dbias_values": None
            if where is None
            else bias_tiles.add(carry["dbias_values"], grads["dbias_values"], where),
            "dparam": None
            if carry["dparam"] is None
            else _add(carry["dparam"], grads["dparam"], r0),
        }
        return carry, None

    carry = _scan_pairs(step, carry, st.plan, kv_major=True)
    dparam = carry["dparam"]
    if param is not None and kind.has_lse:
        dparam = kind.param_grad(param, row_values)
    dbias = iter(carry["dbias"])
    dbias_arrays = [
        next(dbias).astype(a.dtype) if f else None
        for a, f in zip(bias_arrays, learned, strict=True)
    ]
    return (
        jnp.swapaxes(carry["dq_t"], 1, 2).astype(q.dtype),
        carry["dk"].astype(k.dtype),
        carry["dv"].astype(v.dtype),
        None,
        dbias_arrays,
        None if bias_values is None else carry["dbias_values"].astype(bias_values.dtype),
        dparam,
        None,
    )


Forward = Callable[..., tuple[Array, Array | None]]


def with_backward(forward: Forward) -> Callable[..., tuple[Array, Array | None]]:
    """A custom-VJP kernel from a forward pass ``forward(st, q, k, v, mask_arrays, bias_arrays,
    bias_values, param, visit) -> (out, lse)`` on the kernel layout, differentiated by this module's
    recomputing backward pass (which needs only the inputs, ``out`` and ``lse``)."""

    @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
    def kernel(st: Static, *args: Any) -> tuple[Array, Array | None]:
        return forward(st, *args)

    def kernel_forward(st: Static, *args: Any) -> tuple[Any, tuple[Any, ...]]:
        out, lse = forward(st, *args)
        return (out, lse), (*args, out, lse)

    kernel.defvjp(kernel_forward, _backward)
    return kernel


kernel = with_backward(_forward)
