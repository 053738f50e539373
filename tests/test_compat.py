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


def _outputs(fn, q, k, v, kwargs, cotangent):
    """Output, residual and gradients (q, k, v and the bias) under one cotangent."""
    kwargs = dict(kwargs)
    bias = kwargs.pop("bias", None)

    def loss(q, k, v, bias):
        out, residual = fn(q, k, v, bias, return_residual=True, **kwargs)
        return jnp.sum(out * cotangent), (out, residual)

    argnums = (0, 1, 2) if bias is None else (0, 1, 2, 3)
    grads, (out, residual) = jax.grad(loss, argnums=argnums, has_aux=True)(q, k, v, bias)
    return out, residual, grads


IMPLEMENTATIONS = [
    *(("xla", heads) for heads in (N, 2)),
    *(("chunked", heads) for heads in (N, 2)),
    ("pallas", 2),  # interpreted on CPU: slow, so grouped-query heads only
]


@pytest.mark.parametrize(("implementation", "num_kv_heads"), IMPLEMENTATIONS, ids=lambda x: str(x))
@pytest.mark.parametrize("name", sorted(CASES))
def test_values_residual_and_gradients_match_jax_nn(name, implementation, num_kv_heads):
    q, k, v = make_qkv(num_kv_heads)
    kwargs = CASES[name]
    cotangent = np.random.default_rng(2).standard_normal((B, T, N, H)).astype(np.float32)
    ours = functools.partial(compat.dot_product_attention, implementation=implementation)
    theirs = functools.partial(jax.nn.dot_product_attention, implementation="xla")
    got_out, got_residual, got_grads = _outputs(ours, q, k, v, kwargs, cotangent)
    want_out, want_residual, want_grads = _outputs(theirs, q, k, v, kwargs, cotangent)
    np.testing.assert_allclose(got_out, want_out, rtol=1e-5, atol=1e-5)
    for got, want in zip(got_grads, want_grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert got_residual.shape == want_residual.shape == (B, T, N)
    assert got_residual.dtype == want_residual.dtype
    lengths = kwargs.get("query_seq_lengths", np.full(B, T))
    real = np.arange(T)[None, :] < lengths[:, None]  # padded queries: -inf here, not there
    np.testing.assert_allclose(got_residual[real], want_residual[real], rtol=1e-5, atol=1e-5)
    assert np.isneginf(got_residual[~real]).all()


def test_inputs_without_batch_and_residual_without_gradient():
    q, k, v = make_qkv(2, batch=False)
    out, residual = compat.dot_product_attention(q, k, v, is_causal=True, return_residual=True)
    want, want_residual = jax.nn.dot_product_attention(
        q, k, v, is_causal=True, return_residual=True, implementation="xla"
    )
    assert out.shape == (T, N, H) and residual.shape == (T, N)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(residual, want_residual, rtol=1e-5, atol=1e-5)

    def residual_sum(q):
        return compat.dot_product_attention(q, k, v, return_residual=True)[1].sum()

    assert not np.asarray(jax.grad(residual_sum)(q)).any()


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
