"""Recurrent pieces of the RNN encoder-decoder: a padding-aware bidirectional encoder and one
attentional decoder step."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

import attn
from attn.nn import AdditiveAttention, BilinearAttention

__all__ = ["CELLS", "RNN_SCORES", "AttentionStep", "BidirectionalEncoder", "DotAttention"]

Array = jax.Array
Carry = Any  # GRU: h [B, H]; LSTM: (c [B, H], h [B, H])

CELLS: dict[str, Callable[..., nnx.Module]] = {
    "gru": nnx.GRUCell,
    "lstm": nnx.OptimizedLSTMCell,
}


def hidden_of(carry: Carry) -> Array:
    """The hidden state ``h [B, H]`` of a GRU or LSTM carry."""
    return carry[1] if isinstance(carry, tuple) else carry


def zero_carry(cell: nnx.Module, batch_size: int) -> Carry:
    # initialize_carry draws from rngs even for its zero initializer; any key will do.
    return cell.initialize_carry((batch_size, cell.in_features), rngs=nnx.Rngs(0))


# Compiled on its own so that eager calls reuse the scan (a lax.scan of a fresh closure would
# be compiled again on every call); inside an outer jit this is inlined.
@functools.partial(nnx.jit, static_argnames="reverse")
def _run(cell: nnx.Module, x_btd: Array, valid_bt: Array, reverse: bool) -> tuple[Carry, Array]:
    """Scan ``cell`` over time, skipping padding: at a padded step the carry is kept and the
    output is 0, so padding may sit anywhere. Returns the last carry and outputs ``[B, T, H]``."""
    graphdef, state = nnx.split(cell)

    def step(carry, xs):
        x_bd, valid_b1 = xs
        new_carry, h_bh = nnx.merge(graphdef, state)(carry, x_bd)
        carry = jax.tree.map(
            lambda new, old: jnp.where(valid_b1, new, old).astype(old.dtype), new_carry, carry
        )
        return carry, jnp.where(valid_b1, h_bh, 0)

    xs = (jnp.swapaxes(x_btd, 0, 1), valid_bt.T[..., None])
    carry, h_tbh = jax.lax.scan(step, zero_carry(cell, x_btd.shape[0]), xs, reverse=reverse)
    return carry, jnp.swapaxes(h_tbh, 0, 1)


class BidirectionalEncoder(nnx.Module):
    """``x [B, T, E]`` -> states ``[B, T, H]`` (forward and backward halves concatenated) and the
    backward direction's final hidden state ``[B, H/2]``, a summary read right to left that ends
    on the first token (Bahdanau et al. start the decoder from it)."""

    def __init__(self, cell: str, in_features: int, features: int, *, dtype: Any, rngs: nnx.Rngs):
        if features % 2:
            raise ValueError(f"hidden_features must be even (two directions), got {features}")
        make = CELLS[cell]
        self.forward_cell = make(in_features, features // 2, dtype=dtype, rngs=rngs)
        self.backward_cell = make(in_features, features // 2, dtype=dtype, rngs=rngs)

    def __call__(self, x_btd: Array, valid_bt: Array) -> tuple[Array, Array]:
        _, forward_bth = _run(self.forward_cell, x_btd, valid_bt, reverse=False)
        backward_carry, backward_bth = _run(self.backward_cell, x_btd, valid_bt, reverse=True)
        states_bth = jnp.concatenate([forward_bth, backward_bth], axis=-1)
        return states_bth, hidden_of(backward_carry)


class DotAttention(nnx.Module):
    """Luong et al. (2015) "dot" attention, no parameters: score ``q . k``.

    Same call and results as :class:`attn.nn.AdditiveAttention` for one query step.
    """

    def __init__(self, *, weighting: Callable[..., Array] | str = "softmax"):
        self.weighting = attn.catalog.get("weighting", weighting)

    def __call__(
        self, query_bd: Array, keys_bsd: Array, *, mask: Array | None = None
    ) -> tuple[Array, Array]:
        """``(context [B, D], weights [B, S])``; ``mask`` bool ``[B, S]`` (True = real key)."""
        out_b11d, weights_b11s = attn.attend(
            query_bd[:, None, None, :],
            keys_bsd[:, :, None, :],
            keys_bsd[:, :, None, :],
            score=attn.scores.dot,
            mask=None if mask is None else mask[:, None, None, :],
            weighting=self.weighting,
            return_weights=True,
        )
        return out_b11d[:, 0, 0], weights_b11s[:, 0, 0]


RNN_SCORES: dict[str, Callable[..., nnx.Module]] = {
    "additive": lambda features, weighting, rngs: AdditiveAttention(
        features, features, features, weighting=weighting, rngs=rngs
    ),
    "general": lambda features, weighting, rngs: BilinearAttention(
        features, features, weighting=weighting, rngs=rngs
    ),
    "dot": lambda features, weighting, rngs: DotAttention(weighting=weighting),
}


class AttentionStep(nnx.Module):
    """One decoder step, Bahdanau-style: the previous hidden state queries the encoder states,
    and the context is fed to the cell with the previous token's embedding.

    ``(carry, y [B, E], memory [B, S, H], memory_valid [B, S])`` ->
    ``(carry, readout [B, 2H] = [h_t; context_t], weights [B, S])``.
    """

    def __init__(
        self,
        cell: str,
        score: str,
        embed_features: int,
        features: int,
        *,
        weighting: str,
        dtype: Any,
        rngs: nnx.Rngs,
    ):
        self.cell = CELLS[cell](embed_features + features, features, dtype=dtype, rngs=rngs)
        self.attention = RNN_SCORES[score](features, weighting, rngs)

    def __call__(
        self, carry: Carry, y_be: Array, memory_bsh: Array, memory_valid_bs: Array
    ) -> tuple[Carry, Array, Array]:
        context_bh, weights_bs = self.attention(hidden_of(carry), memory_bsh, mask=memory_valid_bs)
        context_bh = context_bh.astype(y_be.dtype)
        carry, h_bh = self.cell(carry, jnp.concatenate([y_be, context_bh], axis=-1))
        return carry, jnp.concatenate([h_bh, context_bh.astype(h_bh.dtype)], axis=-1), weights_bs

    def run(self, carry: Carry, y_bue: Array, memory_bsh: Array, memory_valid_bs: Array) -> Array:
        """Teacher forcing: all ``U`` steps on given inputs ``y [B, U, E]``; readouts
        ``[B, U, 2H]``."""
        return _run_steps(self, carry, y_bue, memory_bsh, memory_valid_bs)

    def initial_carry(self, hidden_bh: Array) -> Carry:
        """A carry whose hidden state is ``hidden`` (an LSTM's memory cell starts at 0)."""
        template = zero_carry(self.cell, hidden_bh.shape[0])
        if isinstance(template, tuple):
            return (template[0], hidden_bh.astype(template[1].dtype))
        return hidden_bh.astype(template.dtype)


@nnx.jit  # compiled on its own for the same reason as _run
def _run_steps(
    step: AttentionStep, carry: Carry, y_bue: Array, memory_bsh: Array, memory_valid_bs: Array
) -> Array:
    graphdef, state = nnx.split(step)

    def scan_step(carry, y_be):
        carry, readout_bf, _ = nnx.merge(graphdef, state)(carry, y_be, memory_bsh, memory_valid_bs)
        return carry, readout_bf

    _, readout_ubf = jax.lax.scan(scan_step, carry, jnp.swapaxes(y_bue, 0, 1))
    return jnp.swapaxes(readout_ubf, 0, 1)
