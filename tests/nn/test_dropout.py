"""attn.nn.Dropout: nnx.Dropout's call and random draws, with rates that may be arrays (vmapped
over a sweep's trials) in Dropout itself and in the modules that use it."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attn.nn import Dropout, MultiHeadAttention, TransformerBlock

B, T, D, N = 2, 5, 8, 2


def inputs(seed=0):
    return jax.random.normal(jax.random.key(seed), (B, T, D))


@pytest.mark.parametrize("broadcast_dims", [(), (0,), (0, 1)])
def test_same_masks_as_nnx_dropout(broadcast_dims):
    ours = Dropout(0.3, broadcast_dims=broadcast_dims, rngs=nnx.Rngs(dropout=3))
    theirs = nnx.Dropout(0.3, broadcast_dims=broadcast_dims, rngs=nnx.Rngs(dropout=3))
    x = inputs()
    for _ in range(2):  # the streams advance alike
        np.testing.assert_array_equal(ours(x), theirs(x))
    fresh = (lambda: jax.random.key(7), lambda: nnx.Rngs(dropout=7), lambda: nnx.Rngs(7).dropout)
    for rngs in fresh:
        np.testing.assert_array_equal(ours(x, rngs=rngs()), theirs(x, rngs=rngs()))
    np.testing.assert_array_equal(ours(x, deterministic=True), x)
    ours.set_view(deterministic=True)
    np.testing.assert_array_equal(ours(x), x)


def test_array_rate_vmapped_equals_each_rate_alone():
    x = inputs()
    rates = jnp.array([0.0, 0.2, 0.5, 1.0])

    def apply(rate):
        return Dropout(rate, rngs=nnx.Rngs(dropout=1))(x)

    stacked = jax.jit(jax.vmap(apply))(rates)
    for rate, got in zip([0.0, 0.2, 0.5, 1.0], stacked, strict=True):
        np.testing.assert_allclose(got, apply(rate), rtol=1e-6)
    assert not np.asarray(stacked[-1]).any()  # rate 1 drops everything
    grad = jax.grad(lambda x: jax.vmap(lambda r: Dropout(r, rngs=nnx.Rngs(1))(x))(rates).sum())(x)
    assert np.isfinite(grad).all()


def test_errors():
    with pytest.raises(ValueError, match=r"rate must be a number in \[0, 1\]"):
        Dropout(1.5)
    with pytest.raises(ValueError, match="no rngs"):
        Dropout(0.5)(inputs())
    with pytest.raises(ValueError, match="no deterministic"):
        Dropout(0.5, deterministic=None, rngs=nnx.Rngs(0))(inputs())
    with pytest.raises(TypeError, match="rngs must be"):
        Dropout(0.5, rngs=jax.random.key(0))


def test_modules_take_a_vmapped_rate(quick_jit):
    """A block built inside ``jax.vmap`` over the rate (residual, MLP and attention-weight
    dropout) gives each rate's own result. (Its own ``"dropout"`` stream: a traced rate forks
    one even at 0, and without it the fork would come from ``"default"``, which ``"params"``
    falls back to.)"""
    x = inputs()
    rates = jnp.array([0.0, 0.3])

    def block(rate):
        model = TransformerBlock(
            D,
            N,
            16,
            dropout_rate=rate,
            attention={"dropout_rate": rate},
            rngs=nnx.Rngs(0, dropout=1),
        )
        return model(x, deterministic=False)

    def attention(rate):
        return MultiHeadAttention(D, N, dropout_rate=rate, rngs=nnx.Rngs(0, dropout=1))(x)

    for fn in (block, attention):
        stacked = quick_jit(jax.vmap(fn))(rates)
        for rate, got in zip([0.0, 0.3], stacked, strict=True):  # each rate a constant
            np.testing.assert_allclose(
                got, quick_jit(functools.partial(fn, rate))(), rtol=1e-5, atol=1e-6
            )
        assert np.abs(stacked[0] - stacked[1]).max() > 1e-3
