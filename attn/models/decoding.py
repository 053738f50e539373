"""Token-by-token decoding loops (greedy or sampled, and beam search): a ``jax.lax.scan`` over
a functional step.

Modules enter the scan body as ``(graphdef, state)`` and are rebuilt with ``nnx.merge``, so the
loop is one compiled step, and state that changes (a KV cache) is threaded as the carry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["EOS_ID", "beam_search", "choose_tokens", "decode_loop", "shift_right", "tile_beams"]

Array = jax.Array

# The end-of-sequence id of every attn.data tokenizer (attn.data.tokenizers.EOS_ID; models do not
# import attn.data). Beam search ends a hypothesis there.
EOS_ID = 2


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


def tile_beams(tree: Any, beam_size: int) -> Any:
    """Every array of ``tree`` repeated along axis 0: ``[B, ...] -> [B * beam_size, ...]``, each
    example's beams consecutive (the layout :func:`beam_search` expects)."""
    return jax.tree.map(lambda x: jnp.repeat(x, beam_size, axis=0), tree)


def beam_search(
    module: nnx.Module,
    step: Callable[[Any, Any, Array, Array], tuple[Array, Any, Any]],
    state: Any,
    first_tokens_b: Array,
    positions: Array,
    *,
    beam_size: int,
    length_penalty: float | Array = 1.0,
    eos_id: int = EOS_ID,
) -> tuple[Array, Array]:
    """Beam search over ``len(positions)`` steps of ``step`` (the protocol of :func:`decode_loop`).

    Everything per example is laid out ``[B * beam_size, ...]`` (:func:`tile_beams`): the
    ``state`` pytree, ``module``'s ``nnx.Cache`` variables and whatever ``step`` closes over,
    each leaf of the first two with that batch axis first (they are reordered along it when
    beams are pruned). Each step extends every live hypothesis by every token and keeps the
    ``beam_size`` most probable (total log-probability); a hypothesis ends at ``eos_id`` and is
    then padded with 0 at no cost. Of the final beams, the one with the highest
    ``log_prob / length ** length_penalty`` wins (``length`` counts tokens through EOS;
    ``length_penalty = 0`` compares total log-probabilities, 1 per-token averages).
    With ``beam_size = 1`` this is greedy decoding up to the first EOS.

    Returns ``(tokens [B, steps] int32, log_prob [B])``: the winner and its total log-probability.
    """
    BK, K = first_tokens_b.shape[0], beam_size
    if BK % K:
        raise ValueError(f"beam_search: batch {BK} is not a multiple of beam_size={K}")
    B, U = BK // K, positions.shape[0]
    graphdef, cache, rest = nnx.split(module, nnx.Cache, ...)
    # All beams start equal: only the first may expand, or the beam would hold K copies.
    scores_bk = jnp.where(jnp.arange(K) == 0, 0.0, -jnp.inf) * jnp.ones((B, 1))
    finished_bk = jnp.zeros((B, K), bool)
    lengths_bk = jnp.zeros((B, K), jnp.int32)
    history_bku = jnp.zeros((B, K, U), jnp.int32)

    def body(carry, position):
        cache, state, tokens, scores_bk, finished_bk, lengths_bk, history_bku = carry
        copy = nnx.merge(graphdef, cache, rest)
        logits, state, _ = step(copy, state, tokens, position)
        log_probs_bkv = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(B, K, -1)
        V = log_probs_bkv.shape[-1]
        padding_v = jnp.where(jnp.arange(V) == 0, 0.0, -jnp.inf)
        log_probs_bkv = jnp.where(finished_bk[..., None], padding_v, log_probs_bkv)
        candidates = (scores_bk[..., None] + log_probs_bkv).reshape(B, K * V)
        scores_bk, chosen_bk = jax.lax.top_k(candidates, K)
        parent_bk, token_bk = chosen_bk // V, (chosen_bk % V).astype(jnp.int32)
        rows = (jnp.arange(B)[:, None] * K + parent_bk).reshape(-1)
        reorder = lambda x: x[rows]  # noqa: E731
        cache = jax.tree.map(reorder, nnx.state(copy, nnx.Cache))
        state = jax.tree.map(reorder, state)
        was_finished = jnp.take_along_axis(finished_bk, parent_bk, axis=1)
        lengths_bk = jnp.where(
            was_finished, jnp.take_along_axis(lengths_bk, parent_bk, axis=1), position + 1
        )
        history_bku = jnp.take_along_axis(history_bku, parent_bk[..., None], axis=1)
        history_bku = history_bku.at[:, :, position].set(token_bk)
        finished_bk = was_finished | (token_bk == eos_id)
        carry = (
            cache,
            state,
            token_bk.reshape(-1),
            scores_bk,
            finished_bk,
            lengths_bk,
            history_bku,
        )
        return carry, None

    carry = (cache, state, first_tokens_b, scores_bk, finished_bk, lengths_bk, history_bku)
    (_, _, _, scores_bk, _, lengths_bk, history_bku), _ = jax.lax.scan(body, carry, positions)
    normalized_bk = scores_bk / lengths_bk.astype(jnp.float32) ** length_penalty
    best_b = jnp.argmax(normalized_bk, axis=1)
    tokens_bu = jnp.take_along_axis(history_bku, best_b[:, None, None], axis=1)[:, 0]
    return tokens_bu, jnp.take_along_axis(scores_bk, best_b[:, None], axis=1)[:, 0]
