"""Location-aware attention: the pure score attn.scores.location_aware and the module
attn.nn.LocationAwareAttention."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import attn

B, T, N, K, H, S, D, W, F = 2, 3, 2, 1, 5, 9, 6, 5, 4


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(B, T, N, H)).astype(np.float32)
    k = rng.normal(size=(B, S, K, H + 1)).astype(np.float32)
    previous = rng.dirichlet(np.ones(S), size=(B, N, T)).astype(np.float32)
    params = dict(
        w_q=rng.normal(size=(H, D)).astype(np.float32) / 2,
        w_k=rng.normal(size=(H + 1, D)).astype(np.float32) / 2,
        v=rng.normal(size=(D,)).astype(np.float32),
        filters=rng.normal(size=(W, F)).astype(np.float32),
        w_location=rng.normal(size=(F, D)).astype(np.float32),
    )
    return q, k, previous, params


def _reference(q, k, previous, w_q, w_k, v, filters, w_location):
    """The composition written out: correlate each previous alignment with each filter (zero
    padding, W // 2 keys on the left), project, add to the projected q and k, tanh, v."""
    pad = jnp.pad(previous, ((0, 0), (0, 0), (0, 0), (W // 2, (W - 1) // 2)))
    windows = jnp.stack([pad[..., i : i + S] for i in range(W)], axis=-1)  # [B, N, T, S, W]
    location = windows @ filters @ w_location  # [B, N, T, S, D]
    q_proj = jnp.einsum("btnh,hd->bntd", q, w_q)[:, :, :, None, :]
    k_proj = jnp.einsum("bskh,hd->bksd", k, w_k)[:, :, None, :, :]  # K = 1 serves every head
    return jnp.tanh(q_proj + k_proj + location) @ v


def test_zero_location_weights_equal_additive():
    q, k, previous, params = _arrays()
    params["w_location"] = np.zeros_like(params["w_location"])
    got = attn.scores.location_aware(q, k, previous_weights=previous, **params)
    additive = attn.scores.additive(q, k, w_q=params["w_q"], w_k=params["w_k"], v=params["v"])
    np.testing.assert_allclose(got, additive, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("max_chunk_elements", [1 << 22, 1])  # one chunk; a chunk per query
def test_values_and_gradients_match_the_composition(max_chunk_elements):
    q, k, previous, params = _arrays(1)
    score = functools.partial(attn.scores.location_aware, max_chunk_elements=max_chunk_elements)

    def loss(fn, q, k, previous, params):
        logits = fn(q, k, previous_weights=previous, **params)
        return jnp.sum(jnp.sin(logits))  # every logit gets its own cotangent

    np.testing.assert_allclose(
        score(q, k, previous_weights=previous, **params),
        _reference(q, k, previous, **params),
        rtol=1e-5,
        atol=1e-5,
    )

    def reference(q, k, previous_weights, **params):
        return _reference(q, k, previous_weights, **params)

    got = jax.grad(functools.partial(loss, score), argnums=(0, 1, 2, 3))(q, k, previous, params)
    want = jax.grad(functools.partial(loss, reference), argnums=(0, 1, 2, 3))(
        q, k, previous, params
    )
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_bad_shapes_raise():
    q, k, previous, params = _arrays()
    with pytest.raises(ValueError, match="previous_weights"):
        attn.scores.location_aware(q, k, previous_weights=previous[:, :, :, 1:], **params)
    with pytest.raises(ValueError, match="w_location"):
        bad = {**params, "w_location": params["w_location"][:, 1:]}
        attn.scores.location_aware(q, k, previous_weights=previous, **bad)


def _module(seed=0):
    return attn.nn.LocationAwareAttention(
        H, H + 1, D, location_filters=F, width=W, rngs=nnx.Rngs(seed)
    )


def test_module_masks_frames_and_reads_the_previous_alignment():
    module = _module()
    q, k, previous, _ = _arrays()
    query, keys, previous_bs = q[:, 0, 0], k[:, :, 0], previous[:, 0, 0]
    valid = np.arange(S)[None] < np.array([[4], [S]])
    context, weights = module(query, keys, previous_weights=previous_bs, mask=valid)
    assert context.shape == (B, H + 1) and weights.shape == (B, S)
    np.testing.assert_array_equal(weights[0, 4:], 0.0)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=1e-6)
    # The scores read the previous alignment: moving it moves the weights.
    _, moved = module(query, keys, previous_weights=np.roll(previous_bs, 3, axis=-1), mask=valid)
    assert not np.allclose(moved, weights)
    # Same as the pure score through attend.
    expected = attn.scores.location_aware(
        q[:, :1, :1],
        k,
        previous_weights=previous[:, :1, :1],
        w_q=module.w_q[...],
        w_k=module.w_k[...],
        v=module.v[...],
        filters=module.filters[...],
        w_location=module.w_location[...],
    )
    expected = jnp.where(valid, expected[:, 0, 0], -jnp.inf)
    np.testing.assert_allclose(weights, jax.nn.softmax(expected), rtol=1e-5, atol=1e-7)


def test_module_fully_masked_row_is_zero_and_finite():
    module = _module()
    q, k, previous, _ = _arrays()
    valid = np.zeros((B, S), bool)

    def loss(module, query):
        context, weights = module(query, k[:, :, 0], previous_weights=previous[:, 0, 0], mask=valid)
        return jnp.sum(context) + jnp.sum(weights)

    context, weights = module(
        q[:, 0, 0], k[:, :, 0], previous_weights=previous[:, 0, 0], mask=valid
    )
    np.testing.assert_array_equal(weights, 0.0)
    np.testing.assert_array_equal(context, 0.0)
    grads = nnx.grad(loss)(module, q[:, 0, 0])
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(grads))


def test_module_checks_previous_weights_shape():
    module = _module()
    q, k, previous, _ = _arrays()
    with pytest.raises(ValueError, match="previous_weights must be"):
        module(q[:, 0, 0], k[:, :, 0], previous_weights=previous[:, 0])
