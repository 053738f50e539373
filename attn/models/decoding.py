"""Token-by-token decoding loops: a ``jax.lax.scan`` over a functional step.

Modules enter the scan body as ``(graphdef, state)`` and are rebuilt with ``nnx.merge``, so the
loop is one compiled step, and state that changes (a KV cache) is threaded as the carry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["choose_tokens", "decode_loop", "shift_right"]

Array = jax.Array


def shift_right(targets_bu: Array, bos_id: int) -> Array:
    """Teacher-forcing decoder inputs: ``[bos, y_0, ..., y_{U-2}]``."""
    bos_b1 = jnp.full((targets_bu.shape[0], 1), bos_id, targets_bu.dtype)
    return jnp.concatenate([bos_b1, targets_bu[:, :-1]], axis=1)


def choose_tokens(logits_bv: Array, rng: Array | None, temperature: float | Array) -> Array:
    """Next tokens, int32 ``[B]``: sampled from ``softmax(logits / temperature)``, or the argmax
    where ``temperature <= 0`` or there is no ``rng``. ``temperature`` may be traced."""
    greedy_b = jnp.argmax(logits_bv, axis=-1).astype(jnp.int32)
    if rng is None:
        return greedy_b
    temperature = jnp.asarray(temperature, jnp.float32)
    scaled_bv = logits_bv.astype(jnp.float32) / jnp.maximum(temperature, 1e-30)
    sampled_b = jax.random.categorical(rng, scaled_bv, axis=-1).astype(jnp.int32)
    return jnp.where(temperature > 0, sampled_b, greedy_b)


def decode_loop(
    module: nnx.Module,
    step: Callable[[Any, Any, Array, Array], tuple[Array, Any, Any]],
    state: Any,
    first_tokens_b: Array,
    positions: Array,
    *,
    rngs: Array | None = None,
    temperature: float | Array = 0.0,
) -> tuple[Array, Any]:
    """Run ``len(positions)`` decoding steps, feeding each chosen token to the next step.

    ``step(module, state, tokens [B], position) -> (logits [B, V], state, outputs)`` runs on a
    copy of ``module`` rebuilt inside the loop; its ``nnx.Cache`` variables (a KV cache) and
    ``state`` (any pytree: a recurrent state, which cache slots are real) are threaded from
    step to step. Step ``i`` is fed ``first_tokens`` (``i = 0``) or the token chosen at step
    ``i - 1``. ``rngs`` (``len(positions)`` keys) samples at ``temperature``; without, greedy.
    ``module`` itself is left unchanged.

    Returns ``(tokens [B, steps] int32, outputs)``: the token chosen at each step and the
    steps' ``outputs`` stacked along axis 1.
    """
    graphdef, cache, rest = nnx.split(module, nnx.Cache, ...)

    def body(carry, xs):
        cache, state, tokens_b = carry
        position, rng = xs
        copy = nnx.merge(graphdef, cache, rest)
        logits_bv, state, outputs = step(copy, state, tokens_b, position)
        next_b = choose_tokens(logits_bv, rng, temperature)
        return (nnx.state(copy, nnx.Cache), state, next_b), (next_b, outputs)

    _, (tokens_sb, outputs) = jax.lax.scan(body, (cache, state, first_tokens_b), (positions, rngs))
    outputs = jax.tree.map(lambda x: jnp.moveaxis(x, 0, 1), outputs)
    return tokens_sb.T, outputs
