"""attn.nn.AdditiveAttention and BilinearAttention against NumPy references."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attn import masks
from attn.nn import AdditiveAttention, BilinearAttention

B, T, S, DQ, DK, DV, HIDDEN = 3, 4, 5, 6, 7, 2, 8


def data(seed=0):
    generator = np.random.default_rng(seed)
    query = generator.standard_normal((B, T, DQ)).astype(np.float32)
    keys = generator.standard_normal((B, S, DK)).astype(np.float32)
    values = generator.standard_normal((B, S, DV)).astype(np.float32)
    valid = np.arange(S)[None, :] < np.array([5, 2, 0])[:, None]  # example 2 has no valid key
    return query, keys, values, valid


def numpy_attend(logits_bts, values, valid):
    """Masked softmax in float64; rows without a valid key get weights 0 and context 0."""
    visible = np.broadcast_to(valid[:, None, :], logits_bts.shape)
    logits = np.where(visible, logits_bts.astype(np.float64), -np.inf)
    row_max = np.max(logits, axis=-1, keepdims=True)
    exp = np.where(visible, np.exp(logits - np.where(np.isfinite(row_max), row_max, 0.0)), 0.0)
    total = exp.sum(-1, keepdims=True)
    weights = exp / np.where(total == 0, 1.0, total)
    return np.einsum("bts,bsv->btv", weights, values), weights


def additive_reference(module, query, keys, values, valid):
    w_q, w_k, v = (np.asarray(p[...], np.float64) for p in (module.w_q, module.w_k, module.v))
    hidden = np.tanh((query @ w_q)[:, :, None, :] + (keys @ w_k)[:, None, :, :])  # [B, T, S, D]
    return numpy_attend(hidden @ v, values, valid)


def bilinear_reference(module, query, keys, values, valid):
    weight = np.asarray(module.weight[...], np.float64)
    return numpy_attend(np.einsum("btq,qk,bsk->bts", query, weight, keys), values, valid)


CASES = [
    (lambda: AdditiveAttention(DQ, DK, HIDDEN, rngs=nnx.Rngs(0)), additive_reference),
    (lambda: BilinearAttention(DQ, DK, rngs=nnx.Rngs(0)), bilinear_reference),
]


@pytest.mark.parametrize(("make", "reference"), CASES, ids=["additive", "bilinear"])
def test_matches_numpy_all_steps_and_one_step(make, reference):
    module = make()
    query, keys, values, valid = data()
    context, weights = module(query, keys, values, mask=valid)
    want_context, want_weights = reference(module, query, keys, values, valid)
    assert context.shape == (B, T, DV) and weights.shape == (B, T, S)
    np.testing.assert_allclose(weights, want_weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(context, want_context, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(context[2], 0.0)

    # One decoder step: query [B, Dq] -> context [B, Dv], weights [B, S].
    context_1, weights_1 = module(query[:, 1], keys, values, mask=valid)
    assert context_1.shape == (B, DV) and weights_1.shape == (B, S)
    np.testing.assert_allclose(weights_1, want_weights[:, 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(context_1, want_context[:, 1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("make", "reference"), CASES, ids=["additive", "bilinear"])
def test_values_default_to_keys_and_mask_objects_work(make, reference):
    module = make()
    query, keys, _, valid = data(1)
    lengths = valid.sum(-1)
    context, weights = module(query, keys, mask=masks.padding(kv_lengths=jnp.asarray(lengths)))
    want_context, want_weights = reference(module, query, keys, keys, valid)
    assert context.shape == (B, T, DK)
    np.testing.assert_allclose(weights, want_weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(context, want_context, rtol=1e-5, atol=1e-5)
    # Without a mask every key counts.
    _, weights = module(query, keys)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(("make", "reference"), CASES, ids=["additive", "bilinear"])
def test_errors(make, reference):
    module = make()
    query, keys, values, valid = data()
    with pytest.raises(ValueError, match="mask must be a bool array"):
        module(query, keys, mask=valid[:, :3])
    with pytest.raises(ValueError, match="mask must be a bool array"):
        module(query, keys, mask=valid.astype(np.int32))
    with pytest.raises(ValueError, match=r"query must be \[B, 6\]"):
        module(query[..., :3], keys)
    with pytest.raises(ValueError, match=r"keys must be \[B, S, 7\]"):
        module(query, keys[..., :3])
    with pytest.raises(ValueError, match="values must be"):
        module(query, keys, values[:, :2])
    with pytest.raises(ValueError, match="differ in batch size"):
        module(query[:2], keys)
