"""Scores against NumPy references, gradients, dtypes, memory of the additive score, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from attn import scores

B, T, S, N, K, H = 2, 5, 7, 4, 2, 8


def make_qk(rng=0, dtype=np.float32, hk=H):
    generator = np.random.default_rng(rng)
    q = generator.standard_normal((B, T, N, H)).astype(dtype)
    k = generator.standard_normal((B, S, K, hk)).astype(dtype)
    return q, k


def numpy_dot(q, k):
    """Reference: repeat each key head for its group of query heads."""
    k_per_query_head = np.repeat(k, q.shape[2] // k.shape[2], axis=2)
    return np.einsum("btnh,bsnh->bnts", q.astype(np.float64), k_per_query_head.astype(np.float64))


def test_dot_and_scaled_dot_match_numpy_with_grouped_heads():
    q, k = make_qk()
    np.testing.assert_allclose(scores.dot(q, k), numpy_dot(q, k), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        scores.scaled_dot(q, k), numpy_dot(q, k) / np.sqrt(H), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        scores.scaled_dot(q, k, scale=0.3), numpy_dot(q, k) * 0.3, rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("per_head", [False, True])
def test_general_matches_numpy(per_head):
    q, k = make_qk(hk=6)
    generator = np.random.default_rng(1)
    weight = generator.standard_normal((N, H, 6) if per_head else (H, 6)).astype(np.float32)
    spec = "btnh,nhd->btnd" if per_head else "btnh,hd->btnd"
    want = numpy_dot(np.einsum(spec, q, weight), k)
    np.testing.assert_allclose(scores.general(q, k, weight=weight), want, rtol=1e-4, atol=1e-4)


def test_cosine_matches_numpy_and_is_bounded():
    q, k = make_qk()
    qn = q / np.linalg.norm(q, axis=-1, keepdims=True)
    kn = k / np.linalg.norm(k, axis=-1, keepdims=True)
    got = scores.cosine(q, k, temperature=0.5)
    np.testing.assert_allclose(got, numpy_dot(qn, kn) / 0.5, rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(got)).max() <= 2.0 + 1e-5
    zero = scores.cosine(np.zeros_like(q), k)
    assert np.isfinite(zero).all() and not np.asarray(zero).any()
    # ... and so is its gradient (an attention output of 0 used as a query, e.g. a glimpse of
    # a fully masked row, must not make the parameters NaN).
    grad = jax.grad(lambda q: scores.cosine(q, k).sum())(jnp.zeros_like(q))
    assert np.isfinite(grad).all()


def additive_params(hq=H, hk=H, d=6, rng=2):
    generator = np.random.default_rng(rng)
    return {
        "w_q": generator.standard_normal((hq, d)).astype(np.float32) * 0.3,
        "w_k": generator.standard_normal((hk, d)).astype(np.float32) * 0.3,
        "v": generator.standard_normal((d,)).astype(np.float32),
    }


def numpy_additive(q, k, w_q, w_k, v):
    k_per_query_head = np.repeat(k, q.shape[2] // k.shape[2], axis=2)
    qp = np.einsum("btnh,hd->bntd", q, w_q)[:, :, :, None, :]
    kp = np.einsum("bsnh,hd->bnsd", k_per_query_head, w_k)[:, :, None, :, :]
    return np.tanh(qp + kp) @ v


@pytest.mark.parametrize("max_chunk_elements", [1, 50, 1 << 22])
def test_additive_matches_numpy_for_any_chunking(max_chunk_elements):
    q, k = make_qk(hk=3)
    params = additive_params(hk=3)
    got = scores.additive(q, k, **params, max_chunk_elements=max_chunk_elements)
    np.testing.assert_allclose(got, numpy_additive(q, k, **params), rtol=1e-5, atol=1e-5)


def test_additive_never_builds_the_whole_hidden_tensor():
    """Forward and backward temporary memory stay far below one [B, N, T, S, D] tensor."""
    length, d = 512, 64
    q = jnp.zeros((1, length, 1, 16))
    params = additive_params(hq=16, hk=16, d=d)
    whole_hidden_bytes = length * length * d * 4

    def loss(q, k):
        return scores.additive(q, k, **params, max_chunk_elements=1 << 18).sum()

    for fn in (loss, jax.grad(loss, argnums=(0, 1))):
        compiled = jax.jit(fn).lower(q, q).compile()
        temp = compiled.memory_analysis().temp_size_in_bytes
        assert temp < whole_hidden_bytes / 4, (fn, temp, whole_hidden_bytes)


@pytest.mark.parametrize("name", ["dot", "scaled_dot", "general", "cosine", "additive"])
def test_gradients(name):
    q, k = make_qk(dtype=np.float64)
    extra = {
        "general": {"weight": np.random.default_rng(3).standard_normal((H, H))},
        "additive": {k_: v.astype(np.float64) for k_, v in additive_params().items()},
    }.get(name, {})
    fn = getattr(scores, name)
    with jax.enable_x64():
        check_grads(lambda q, k: fn(q, k, **extra), (q, k), order=1, modes=("fwd", "rev"))


@pytest.mark.parametrize("name", ["dot", "scaled_dot", "cosine"])
def test_bfloat16_inputs_accumulate_in_float32(name):
    q, k = make_qk()
    fn = getattr(scores, name)
    low = fn(q.astype(jnp.bfloat16), k.astype(jnp.bfloat16))
    assert low.dtype == jnp.float32
    high = fn(q.astype(jnp.bfloat16).astype(np.float32), k.astype(jnp.bfloat16).astype(np.float32))
    np.testing.assert_allclose(low, high, rtol=1e-5, atol=1e-4)


def test_jit_and_vmap():
    q, k = make_qk()
    np.testing.assert_allclose(jax.jit(scores.scaled_dot)(q, k), scores.scaled_dot(q, k), rtol=1e-6)
    stacked = jax.vmap(scores.dot)(np.stack([q, 2 * q]), np.stack([k, k]))
    np.testing.assert_allclose(stacked[1], 2 * scores.dot(q, k), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda q, k: scores.dot(q[0], k), ValueError, "q must have rank 4"),
        (lambda q, k: scores.dot(q, k[:, :, :, :, None]), ValueError, "k must have rank 4"),
        (lambda q, k: scores.dot(q[:1], k), ValueError, "batch"),
        (lambda q, k: scores.dot(q[:, :, :3], k), ValueError, "multiple of key heads"),
        (lambda q, k: scores.dot(q[..., :4], k), ValueError, "head features"),
        (lambda q, k: scores.dot(q.astype(np.int32), k), TypeError, "float"),
        (lambda q, k: scores.general(q, k, weight=np.ones((3, 3))), ValueError, "weight"),
        (lambda q, k: scores.cosine(q, k, temperature=0.0), ValueError, "temperature"),
        (
            lambda q, k: scores.additive(q, k, **additive_params(d=4) | {"v": np.ones(5)}),
            ValueError,
            "additive",
        ),
    ],
)
def test_bad_input_raises_a_clear_error(call, error, message):
    q, k = make_qk()
    with pytest.raises(error, match=message):
        call(q, k)
