"""attend against tokamax's ``dot_product_attention(implementation="xla_chunked")`` itself:
values and gradients (q, k, v and a bias array) for its arguments, soft-capping included, in
every implementation that runs on CPU. tokamax is in the ``test`` extra (and ``bench``), so
these run wherever the tests do; the ``tokamax`` fixture skips them only in an environment
installed without it."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attn
from attn import masks

B, T, S, N, H = 2, 7, 9, 4, 8


pytestmark = pytest.mark.usefixtures("small_tiles")


def make_qkv(num_kv_heads):
    generator = np.random.default_rng(0)
    q = generator.standard_normal((B, T, N, H)).astype(np.float32)
    k = generator.standard_normal((B, S, num_kv_heads, H)).astype(np.float32)
    v = generator.standard_normal((B, S, num_kv_heads, H)).astype(np.float32)
    return q, k, v


_GENERATOR = np.random.default_rng(1)
_BIAS = (_GENERATOR.standard_normal((1, N, T, S)) * 2).astype(np.float32)
_MASK = _GENERATOR.random((B, 1, T, S)) > 0.4
_MASK[..., 0] = True  # tokamax, like jax.nn, averages rows that see no key

# (tokamax keyword arguments, the same as attend keyword arguments); every row sees a key.
CASES = {
    "plain": ({}, {}),
    "scale": ({"scale": 0.3}, {"scale": 0.3}),
    "bias": ({"bias": _BIAS}, {"bias": _BIAS}),
    "mask": ({"mask": _MASK}, {"mask": _MASK}),
    "causal": ({"is_causal": True}, {"mask": masks.causal()}),
    "window": ({"local_window_size": (2, 1)}, {"mask": masks.sliding_window(2, 1)}),
    "soft_cap": ({"logits_soft_cap": 1.5}, {"logits_soft_cap": 1.5}),
    "soft_cap_bias_mask": (
        {"logits_soft_cap": 2.0, "bias": _BIAS, "mask": _MASK},
        {"logits_soft_cap": 2.0, "bias": _BIAS, "mask": _MASK},
    ),
}


def _grads(jit, fn, q, k, v, bias):
    """Gradients (q, k, v and the bias) under one cotangent, and the output, compiled by
    ``jit``."""
    cotangent = np.random.default_rng(2).standard_normal((B, T, N, H)).astype(np.float32)

    def loss(q, k, v, bias):
        out = fn(q, k, v, bias)
        return jnp.sum(out * cotangent), out

    argnums = (0, 1, 2) if bias is None else (0, 1, 2, 3)
    return jit(jax.grad(loss, argnums=argnums, has_aux=True))(q, k, v, bias)


IMPLEMENTATIONS = ("dense", "chunked", "pallas")  # every one that runs on CPU (Pallas interpreted)
# Every case on every implementation with grouped-query heads; multi-head once per
# implementation, with soft-capping, a bias per head and a mask.
PARAMS = [
    *((name, implementation, 2) for name in sorted(CASES) for implementation in IMPLEMENTATIONS),
    *(("soft_cap_bias_mask", implementation, N) for implementation in IMPLEMENTATIONS),
]


@functools.cache
def _tokamax_grads(tokamax, name, num_kv_heads):
    """tokamax's gradients and output for a case, computed once for every implementation.

    Compiled with XLA's default backend optimisation (level 2), whatever the session's XLA_FLAGS
    say (tests/conftest.py turns it off): with it off, tokamax's xla_chunked backward returns
    NaN gradients for a bias array (tokamax 0.0.12, jax 0.10 on CPU)."""
    kwargs = dict(CASES[name][0])
    bias = kwargs.pop("bias", None)

    def theirs(q, k, v, bias):
        return tokamax.dot_product_attention(
            q, k, v, bias=bias, implementation="xla_chunked", **kwargs
        )

    def optimised_jit(fn):
        def call(*args):
            compiled = jax.jit(fn).lower(*args).compile({"xla_backend_optimization_level": 2})
            return compiled(*args)

        return call

    return _grads(optimised_jit, theirs, *make_qkv(num_kv_heads), bias)


@pytest.mark.parametrize(("name", "implementation", "num_kv_heads"), PARAMS)
def test_values_and_gradients_match_tokamax_xla_chunked(
    name, implementation, num_kv_heads, tokamax, quick_jit
):
    kwargs = dict(CASES[name][1])
    bias = kwargs.pop("bias", None)

    def ours(q, k, v, bias):
        return attn.attend(q, k, v, bias=bias, implementation=implementation, **kwargs)

    got_grads, got = _grads(quick_jit, ours, *make_qkv(num_kv_heads), bias)
    want_grads, want = _tokamax_grads(tokamax, name, num_kv_heads)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for got_grad, want_grad in zip(got_grads, want_grads, strict=True):
        np.testing.assert_allclose(got_grad, want_grad, rtol=1e-4, atol=1e-5)
