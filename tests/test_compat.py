"""attn.compat.dot_product_attention against jax.nn.dot_product_attention itself (its XLA path):
the same signature, values and gradients on jax.nn's own kinds of cases, for every
implementation that runs on CPU; rows that see no key are the one intended difference."""

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn import compat

B, T, S, N, H = 2, 7, 9, 4, 8


pytestmark = pytest.mark.usefixtures("small_tiles")


def make_qkv(num_kv_heads, batch=True, seed=0):
    generator = np.random.default_rng(seed)
    lead = (B,) if batch else ()
    q = generator.standard_normal((*lead, T, N, H)).astype(np.float32)
    k = generator.standard_normal((*lead, S, num_kv_heads, H)).astype(np.float32)
    v = generator.standard_normal((*lead, S, num_kv_heads, H)).astype(np.float32)
    return q, k, v


def test_signature_is_jax_nn_signature():
    theirs = inspect.signature(jax.nn.dot_product_attention)
    ours = inspect.signature(compat.dot_product_attention)
    assert list(ours.parameters) == list(theirs.parameters)
    for name, parameter in theirs.parameters.items():
        assert ours.parameters[name].kind == parameter.kind, name
        assert ours.parameters[name].default == parameter.default, name


_GENERATOR = np.random.default_rng(1)
_MASK = _GENERATOR.random((B, 1, T, S)) > 0.4
_MASK[..., 3] = True  # every row sees a key (jax.nn averages rows that see none)
_BIAS = _GENERATOR.standard_normal((1, N, T, S)).astype(np.float32)

# jax.nn's own kinds of cases; every row sees at least one key.
CASES = {
    "plain": {},
    "scale": {"scale": 0.2},
    "bias": {"bias": _BIAS},
    "mask": {"mask": _MASK},
    "bias_and_mask": {"bias": _BIAS[:, :1], "mask": _MASK[:1]},
    "causal": {"is_causal": True},
    "window_int": {"local_window_size": 2},
    "window_pair": {"local_window_size": (3, 1)},
    "causal_window": {"is_causal": True, "local_window_size": (2, 0)},
    "kv_lengths": {"key_value_seq_lengths": np.array([5, 9], np.int32)},
    "both_lengths": {
        "query_seq_lengths": np.array([7, 4], np.int32),
        "key_value_seq_lengths": np.array([6, 3], np.int32),
        "is_causal": True,
    },
}


def _outputs(jit, fn, name, num_kv_heads):
    """Output, residual and gradients (q, k, v and the bias) of a case under one cotangent,
    compiled by ``jit``."""
    kwargs = dict(CASES[name])
    bias = kwargs.pop("bias", None)
    cotangent = np.random.default_rng(2).standard_normal((B, T, N, H)).astype(np.float32)

    def loss(q, k, v, bias):
        out, residual = fn(q, k, v, bias, return_residual=True, **kwargs)
        return jnp.sum(out * cotangent), (out, residual)

    argnums = (0, 1, 2) if bias is None else (0, 1, 2, 3)
    grad = jit(jax.grad(loss, argnums=argnums, has_aux=True))
    grads, (out, residual) = grad(*make_qkv(num_kv_heads), bias)
    return out, residual, grads


@functools.cache
def _jax_nn_outputs(name, num_kv_heads):
    """jax.nn's (XLA path) outputs for a case, computed once for every implementation."""
    theirs = functools.partial(jax.nn.dot_product_attention, implementation="xla")
    return _outputs(jax.jit, theirs, name, num_kv_heads)


IMPLEMENTATIONS = ("xla", "chunked", "pallas")  # every one that runs on CPU (Pallas interpreted)
# Every case on every implementation with grouped-query heads (jax.nn repeats k and v, attend
# groups q); multi-head once per implementation, with a bias per head.
PARAMS = [
    *((name, implementation, 2) for name in sorted(CASES) for implementation in IMPLEMENTATIONS),
    *(("bias", implementation, N) for implementation in IMPLEMENTATIONS),
]


@pytest.mark.parametrize(("name", "implementation", "num_kv_heads"), PARAMS)
def test_values_residual_and_gradients_match_jax_nn(name, implementation, num_kv_heads, quick_jit):
    ours = functools.partial(compat.dot_product_attention, implementation=implementation)
    got_out, got_residual, got_grads = _outputs(quick_jit, ours, name, num_kv_heads)
    want_out, want_residual, want_grads = _jax_nn_outputs(name, num_kv_heads)
    np.testing.assert_allclose(got_out, want_out, rtol=1e-5, atol=1e-5)
    for got, want in zip(got_grads, want_grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert got_residual.shape == want_residual.shape == (B, T, N)
    assert got_residual.dtype == want_residual.dtype
    lengths = CASES[name].get("query_seq_lengths", np.full(B, T))
    real = np.arange(T)[None, :] < lengths[:, None]  # padded queries: -inf here, not there
    np.testing.assert_allclose(got_residual[real], want_residual[real], rtol=1e-5, atol=1e-5)
    assert np.isneginf(got_residual[~real]).all()


def test_inputs_without_batch_and_residual_without_gradient(quick_jit):
    def both(q, k, v):
        def residual_sum(q):
            return compat.dot_product_attention(q, k, v, return_residual=True)[1].sum()

        return (
            compat.dot_product_attention(q, k, v, is_causal=True, return_residual=True),
            jax.nn.dot_product_attention(
                q, k, v, is_causal=True, return_residual=True, implementation="xla"
            ),
            jax.grad(residual_sum)(q),
        )

    (out, residual), (want, want_residual), residual_grad = quick_jit(both)(
        *make_qkv(2, batch=False)
    )
    assert out.shape == (T, N, H) and residual.shape == (T, N)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(residual, want_residual, rtol=1e-5, atol=1e-5)
    assert not np.asarray(residual_grad).any()


def test_rows_that_see_no_key_output_zero():
    """The intended difference: jax.nn averages the values uniformly over such a row."""
    q, k, v = make_qkv(N)
    lengths = np.array([0, S], np.int32)
    got = compat.dot_product_attention(q, k, v, key_value_seq_lengths=lengths)
    want = jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=lengths)
    assert not np.asarray(got[0]).any()
    np.testing.assert_allclose(want[0], np.broadcast_to(v[0].mean(0), want[0].shape), atol=1e-5)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5)


def test_unknown_implementation_names_attend_choices():
    with pytest.raises(ValueError, match="implementation must be one of"):
        compat.dot_product_attention(*make_qkv(N), implementation="triton")
