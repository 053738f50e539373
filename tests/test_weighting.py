"""attn.weighting against NumPy references; sparse-map properties; the fully-masked-row policy."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from attn import masks
from attn import weighting as W

B, N, T, S = 2, 3, 4, 6

# Every weighting with its defaults; log_normalizer is the odd one out (one value per row).
FUNCTIONS = {
    "softmax": W.softmax,
    "softmax_with_sink": W.softmax_with_sink,
    "sparsemax": W.sparsemax,
    "entmax15": W.entmax15,
    "sigmoid": W.sigmoid,
    "relu": W.relu,
    "squared_relu": W.squared_relu,
    "log_normalizer": W.log_normalizer,
    "log_normalizer_sink": functools.partial(W.log_normalizer, sink_logit=0.5),
}
WEIGHTINGS = [name for name in FUNCTIONS if not name.startswith("log_normalizer")]
NORMALIZED = ("softmax", "sparsemax", "entmax15")


def random_logits(shape=(B, N, T, S), seed=0, scale=2.0, dtype=np.float32):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def random_mask(shape=(B, N, T, S), seed=1, density=0.6, empty_rows=True):
    """Random visibility with the first row (query 0 of example 0, head 0) fully masked."""
    mask = np.random.default_rng(seed).random(shape) < density
    if empty_rows:
        mask[(0,) * (len(shape) - 1)] = False
    return mask


# --------------------------------------------------------------------------- NumPy references


def np_visible(logits, mask):
    visible = ~np.isneginf(logits)
    if mask is not None:
        visible = visible & np.broadcast_to(mask, logits.shape)
    return visible


def np_softmax(logits, mask=None, temperature=1.0, sink=None):
    """Float64 softmax over visible entries; the sink is an extra key with a zero value."""
    x = np.asarray(logits, np.float64) / temperature
    visible = np_visible(x, mask)
    row_max = np.where(visible, x, -np.inf).max(-1, keepdims=True)
    if sink is not None:
        row_max = np.maximum(row_max, sink)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    exp = np.where(visible, np.exp(np.where(visible, x, 0.0) - row_max), 0.0)
    total = exp.sum(-1, keepdims=True)
    if sink is not None:
        total = total + np.exp(sink - row_max)
    return exp / np.where(total > 0, total, 1.0)


def np_log_normalizer(logits, mask=None, temperature=1.0, sink=None):
    x = np.asarray(logits, np.float64) / temperature
    visible = np_visible(x, mask)
    with np.errstate(divide="ignore"):
        terms = np.where(visible, np.exp(np.where(visible, x, -np.inf)), 0.0)
        total = terms.sum(-1)
        if sink is not None:
            total = total + np.exp(np.asarray(sink, np.float64) / temperature)[..., 0]
        return np.log(total)


def np_sparse_map(logits, mask=None, *, alpha):
    """alpha=2: sparsemax, alpha=1.5: 1.5-entmax. Finds tau with sum(relu(z - tau)^power) = 1
    by bisection (independent of the sort-based algorithm under test)."""
    x = np.asarray(logits, np.float64)
    visible = np_visible(x, mask)
    top = np.where(visible, x, -np.inf).max(-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    # Shifting first keeps tau resolvable next to logits like 1e30.
    z = np.where(visible, (alpha - 1.0) * (np.where(visible, x, 0.0) - top), -np.inf)
    power = 1.0 / (alpha - 1.0)
    lo, hi = np.full_like(top, -1.0), np.zeros_like(top)  # top weight <= 1: tau in [-1, 0]
    for _ in range(200):
        mid = (lo + hi) / 2
        total = (np.maximum(z - mid, 0.0) ** power).sum(-1, keepdims=True)
        lo, hi = np.where(total > 1, mid, lo), np.where(total > 1, hi, mid)
    return np.where(visible, np.maximum(z - (lo + hi) / 2, 0.0) ** power, 0.0)


def np_sigmoid(logits, mask=None, bias=None):
    x = np.asarray(logits, np.float64)
    bias = -np.log(x.shape[-1]) if bias is None else bias
    return np.where(np_visible(x, mask), 1.0 / (1.0 + np.exp(-(x + bias))), 0.0)


def np_relu(logits, mask=None, scale=None, power=1):
    x = np.asarray(logits, np.float64)
    scale = 1.0 / x.shape[-1] if scale is None else scale
    return np.where(np_visible(x, mask), np.maximum(x, 0.0) ** power * scale, 0.0)


NP_REFERENCES = {
    "softmax": np_softmax,
    "softmax_with_sink": functools.partial(np_softmax, sink=0.0),
    "sparsemax": functools.partial(np_sparse_map, alpha=2.0),
    "entmax15": functools.partial(np_sparse_map, alpha=1.5),
    "sigmoid": np_sigmoid,
    "relu": np_relu,
    "squared_relu": functools.partial(np_relu, power=2),
}


def test_numpy_references_agree_with_each_other():
    # The bisection reference would hide bugs shared with the code under test if it were wrong:
    # at alpha -> 1 entmax tends to softmax, and at alpha = 2 it must match a sort-based formula.
    x = random_logits((5, 7), seed=3).astype(np.float64)
    close_to_softmax = np_sparse_map(x, alpha=1.001)
    np.testing.assert_allclose(close_to_softmax, np_softmax(x), atol=5e-3)
    for row, p in zip(x, np_sparse_map(x, alpha=2.0), strict=True):
        z = np.sort(row)[::-1]
        k = np.arange(1, len(z) + 1)
        support = k[1 + k * z > np.cumsum(z)].max()
        tau = (np.cumsum(z)[support - 1] - 1) / support
        np.testing.assert_allclose(p, np.maximum(row - tau, 0.0), atol=1e-12)


# --------------------------------------------------------------------------- against references


@pytest.mark.parametrize("name", WEIGHTINGS)
@pytest.mark.parametrize("masked", [False, True])
def test_matches_numpy_reference(name, masked):
    x = random_logits()
    mask = random_mask() if masked else None
    got = jax.jit(FUNCTIONS[name])(x, mask)
    assert got.dtype == jnp.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, NP_REFERENCES[name](x, mask), rtol=2e-5, atol=2e-6)


def test_softmax_equals_jax_nn_softmax_when_nothing_is_masked():
    x = random_logits(seed=4)
    np.testing.assert_allclose(W.softmax(x), jax.nn.softmax(x, axis=-1), rtol=1e-6, atol=1e-7)
    # With a mask that leaves every row a visible key the two agree as well.
    mask = random_mask(seed=5, density=0.7, empty_rows=False)
    mask[..., 0] = True
    expected = jax.nn.softmax(x, axis=-1, where=mask)
    np.testing.assert_allclose(W.softmax(x, mask), expected, rtol=1e-6, atol=1e-7)


def test_softmax_temperature_scalar_and_per_head():
    x, mask = random_logits(seed=6), random_mask(seed=7)
    np.testing.assert_allclose(
        W.softmax(x, mask, temperature=0.3), np_softmax(x, mask, 0.3), rtol=2e-5, atol=1e-6
    )
    per_head = np.array([0.5, 1.0, 4.0], np.float32)
    np.testing.assert_allclose(
        W.softmax(x, mask, temperature=per_head),
        np_softmax(x, mask, per_head.reshape(1, N, 1, 1)),
        rtol=2e-5,
        atol=1e-6,
    )


def test_softmax_with_sink_scalar_per_head_and_broadcast():
    x, mask = random_logits(seed=8), random_mask(seed=9)
    for sink in (0.0, -1.5, 2.0):
        np.testing.assert_allclose(
            W.softmax_with_sink(x, mask, sink_logit=sink),
            np_softmax(x, mask, sink=sink),
            rtol=2e-5,
            atol=1e-6,
        )
    per_head = np.array([-1.0, 0.0, 3.0], np.float32)
    np.testing.assert_allclose(
        W.softmax_with_sink(x, mask, sink_logit=per_head),
        np_softmax(x, mask, sink=per_head.reshape(1, N, 1, 1)),
        rtol=2e-5,
        atol=1e-6,
    )
    per_query = random_logits((1, 1, T, 1), seed=10)
    np.testing.assert_allclose(
        W.softmax_with_sink(x, mask, sink_logit=per_query),
        np_softmax(x, mask, sink=per_query),
        rtol=2e-5,
        atol=1e-6,
    )


def test_softmax_with_sink_rows_sum_below_one_and_tend_to_softmax():
    x = random_logits(seed=11)
    totals = np.asarray(W.softmax_with_sink(x)).sum(-1)
    assert np.all(totals < 1.0) and np.all(totals > 0.0)
    # exp(0) / (exp(0) + S * exp(0)): the sink takes 1 / (S + 1) of a row of equal logits.
    np.testing.assert_allclose(W.softmax_with_sink(np.zeros((1, S), np.float32)), 1 / (S + 1))
    np.testing.assert_allclose(
        W.softmax_with_sink(x, sink_logit=-200.0), W.softmax(x), rtol=1e-6, atol=1e-7
    )


def test_log_normalizer_matches_numpy_and_reconstructs_softmax():
    x, mask = random_logits(seed=12), random_mask(seed=13)
    lse = W.log_normalizer(x, mask, temperature=0.7)
    assert lse.shape == (B, N, T) and lse.dtype == jnp.float32
    np.testing.assert_allclose(lse, np_log_normalizer(x, mask, 0.7), rtol=1e-5, atol=1e-6)
    assert np.isneginf(lse[0, 0, 0])  # the fully masked row
    visible = np_visible(x, mask)
    rebuilt = np.where(visible, np.exp(x / 0.7 - np.asarray(lse)[..., None]), 0.0)
    np.testing.assert_allclose(rebuilt, W.softmax(x, mask, temperature=0.7), atol=1e-6)


def test_log_normalizer_with_sink_is_finite_and_matches_numpy():
    x, mask = random_logits(seed=14), random_mask(seed=15)
    sink = np.array([0.0, -2.0, 1.0], np.float32)
    lse = W.log_normalizer(x, mask, sink_logit=sink)
    assert np.all(np.isfinite(lse))
    expected = np_log_normalizer(
        x, mask, sink=np.broadcast_to(sink.reshape(1, N, 1, 1), (B, N, T, 1))
    )
    np.testing.assert_allclose(lse, expected, rtol=1e-5, atol=1e-6)
    # A fully masked row holds only the sink: log(exp(sink)).
    np.testing.assert_allclose(lse[0, 0, 0], sink[0], atol=1e-6)
    rebuilt = np.where(np_visible(x, mask), np.exp(x - np.asarray(lse)[..., None]), 0.0)
    np.testing.assert_allclose(rebuilt, W.softmax_with_sink(x, mask, sink_logit=sink), atol=1e-6)


def test_log_normalizer_gradient_is_softmax():
    x, mask = random_logits(seed=16), random_mask(seed=17)

    def total(x):
        lse = W.log_normalizer(x, mask)
        return jnp.where(jnp.isfinite(lse), lse, 0.0).sum()

    grad = jax.grad(total)(jnp.asarray(x))
    np.testing.assert_allclose(grad, W.softmax(x, mask), atol=1e-6)


# --------------------------------------------------------------------------- sparse maps


def test_sparsemax_known_values():
    # Sorted 1, 0.5, -1: k=2 passes (1 + 2 * 0.5 = 2 > 1.5), k=3 fails (1 - 3 = -2 < 0.5),
    # so tau = (1 + 0.5 - 1) / 2 = 0.25 and p = (0.75, 0.25, 0).
    np.testing.assert_allclose(W.sparsemax(jnp.array([1.0, 0.5, -1.0])), [0.75, 0.25, 0.0])
    # Equal logits: the uniform distribution.
    np.testing.assert_allclose(W.sparsemax(jnp.zeros(3)), [1 / 3, 1 / 3, 1 / 3], rtol=1e-6)
    # A gap of at least 1 leaves a one-hot: tau = 3 - 1 = 2.
    np.testing.assert_allclose(W.sparsemax(jnp.array([3.0, 0.0, 0.0])), [1.0, 0.0, 0.0])
    # 0.5 * arange(8): k=2 passes (1 + 2 * 3 = 7 > 6.5), k=3 fails (1 + 7.5 < 9), tau = 2.75.
    expected = [0.0] * 6 + [0.25, 0.75]
    np.testing.assert_allclose(W.sparsemax(0.5 * jnp.arange(8.0)), expected, atol=1e-7)


def test_entmax15_known_values():
    # x = (1, 0, -2), u = x / 2 = (0.5, 0, -1). With support {1, 2}: (0.5 - tau)^2 + tau^2 = 1,
    # i.e. 2 tau^2 - tau - 0.75 = 0, tau = (1 - sqrt(7)) / 4 ~ -0.411 (> -1, so x_3 is out).
    # p_1 = ((1 + sqrt(7)) / 4)^2 = (4 + sqrt(7)) / 8, p_2 = (4 - sqrt(7)) / 8.
    expected = [(4 + np.sqrt(7)) / 8, (4 - np.sqrt(7)) / 8, 0.0]
    np.testing.assert_allclose(W.entmax15(jnp.array([1.0, 0.0, -2.0])), expected, rtol=1e-6)
    # Only the gaps matter: the top two of arange(8) are one apart as well.
    got = W.entmax15(jnp.arange(8.0))
    np.testing.assert_allclose(got, [0.0] * 6 + expected[1::-1], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(W.entmax15(jnp.zeros(4)), [0.25] * 4, rtol=1e-6)
    # A gap of 2 in x is 1 in x / 2, the largest tau can be below the top: one-hot.
    np.testing.assert_allclose(W.entmax15(jnp.array([2.5, 0.5, 0.0])), [1.0, 0.0, 0.0])


@pytest.mark.parametrize("name", ["sparsemax", "entmax15"])
def test_sparse_map_properties(name):
    fn = FUNCTIONS[name]
    x, mask = random_logits((64, 9), seed=18, scale=1.5), random_mask((64, 9), seed=19)
    p = np.asarray(fn(x, mask))
    has_visible = mask.any(-1)
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.sum(-1), has_visible.astype(np.float32), atol=1e-5)
    assert np.all(p[~mask] == 0)
    # Sparse, unlike softmax: many visible entries get an exact zero.
    assert np.sum((p == 0) & mask) > 0.2 * mask.sum()
    # Invariant to adding a constant to every logit of a row.
    shifts = np.random.default_rng(20).uniform(-50, 50, (64, 1)).astype(np.float32)
    np.testing.assert_allclose(fn(x + shifts, mask), p, atol=2e-5)
    # p = relu(z - tau) ** power with one tau per row, z = x (sparsemax) or x / 2 (entmax15).
    z, power = (x, 1.0) if name == "sparsemax" else (x / 2, 2.0)
    z, p, visible = z[has_visible], p[has_visible], mask[has_visible]
    support = p > 0
    tau_each = np.where(support, z - p ** (1 / power), 0.0)
    tau = tau_each.sum(-1, keepdims=True) / support.sum(-1, keepdims=True)
    np.testing.assert_allclose(
        np.where(support, tau_each, tau), np.broadcast_to(tau, z.shape), atol=1e-5
    )
    assert np.all(np.where(visible & ~support, z, -np.inf) <= tau + 1e-5)


@pytest.mark.parametrize("name", ["sparsemax", "entmax15"])
def test_sparse_map_matches_bisection_on_hard_rows(name):
    # Ties, one visible key, near-equal values, wide ranges.
    x = np.array(
        [
            [1.0, 1.0, 1.0, 1.0, -3.0],
            [5.0, -np.inf, -np.inf, 0.0, 0.0],
            [0.0, 1e-7, 2e-7, -1e-7, 0.0],
            [100.0, -100.0, 99.5, 99.9, -1e30],
            [-1e30, 1e30, 0.0, 3.0, 2.0],
        ],
        np.float32,
    )
    got = FUNCTIONS[name](x)
    np.testing.assert_allclose(got, NP_REFERENCES[name](x), atol=2e-5)


@pytest.mark.parametrize("name", ["sparsemax", "entmax15"])
def test_sparse_map_ignores_masked_entries_completely(name):
    # Masked logits are far larger than visible ones; a big-negative-constant trick would leak.
    x = np.array([[0.0, 1e30, 0.5, 1e38, -0.25]], np.float32)
    mask = np.array([[True, False, True, False, True]])
    visible_only = FUNCTIONS[name](x[:, mask[0]])
    got = FUNCTIONS[name](x, mask)
    np.testing.assert_allclose(got[:, mask[0]], visible_only, rtol=1e-6)
    assert np.all(np.asarray(got)[~mask] == 0)


def test_sparsemax_jacobian_closed_form():
    x = jnp.array([1.0, 0.5, -1.0, 0.8])  # support {0, 1, 3}
    s = np.array([1.0, 1.0, 0.0, 1.0])
    expected = np.diag(s) - np.outer(s, s) / s.sum()
    np.testing.assert_allclose(jax.jit(jax.jacfwd(W.sparsemax))(x), expected, atol=1e-6)
    np.testing.assert_allclose(jax.jit(jax.jacrev(W.sparsemax))(x), expected, atol=1e-6)


def test_entmax15_jacobian_closed_form():
    x = jnp.array([1.0, 0.0, -2.0])
    s = np.sqrt(np.asarray(W.entmax15(x), np.float64))
    expected = np.diag(s) - np.outer(s, s) / s.sum()
    np.testing.assert_allclose(jax.jit(jax.jacfwd(W.entmax15))(x), expected, atol=1e-6)
    np.testing.assert_allclose(jax.jit(jax.jacrev(W.entmax15))(x), expected, atol=1e-6)


# --------------------------------------------------------------------------- elementwise


def test_sigmoid_default_bias_is_minus_log_length_and_custom_bias():
    x, mask = random_logits(seed=21), random_mask(seed=22)
    np.testing.assert_allclose(W.sigmoid(np.zeros((2, 4), np.float32)), 1 / (1 + 4))
    np.testing.assert_allclose(W.sigmoid(x, mask, bias=0.3), np_sigmoid(x, mask, 0.3), rtol=1e-6)
    per_head = np.array([-1.0, 0.0, 2.0], np.float32)
    np.testing.assert_allclose(
        W.sigmoid(x, mask, bias=per_head),
        np_sigmoid(x, mask, per_head.reshape(1, N, 1, 1)),
        rtol=1e-6,
    )


@pytest.mark.parametrize("name,power", [("relu", 1), ("squared_relu", 2)])
def test_relu_scales(name, power):
    x, mask = random_logits(seed=23), random_mask(seed=24)
    fn = FUNCTIONS[name]
    np.testing.assert_allclose(fn(jnp.array([2.0, -1.0])), [2.0**power / 2, 0.0])
    np.testing.assert_allclose(
        fn(x, mask, scale=0.25), np_relu(x, mask, 0.25, power), rtol=1e-6, atol=1e-7
    )
    per_head = np.array([0.5, 1.0, 2.0], np.float32)
    np.testing.assert_allclose(
        fn(x, mask, scale=per_head),
        np_relu(x, mask, per_head.reshape(1, N, 1, 1), power),
        rtol=1e-6,
        atol=1e-7,
    )


# --------------------------------------------------------------------------- gradients


def _kink_free_logits(name, shape, mask):
    """Logits at least 0.05 away from every point where the weighting is not differentiable
    (support changes for the sparse maps, 0 for the ReLUs), so finite differences are valid."""
    for seed in range(100):
        x = random_logits(shape, seed=seed, scale=1.0).astype(np.float64)
        if name in ("relu", "squared_relu"):
            margin = np.abs(x)
        elif name in ("sparsemax", "entmax15"):
            alpha = 2.0 if name == "sparsemax" else 1.5
            z = (alpha - 1) * x
            p = np_sparse_map(x, mask, alpha=alpha)
            tau = np.where(p > 0, z - p ** (alpha - 1), -np.inf).max(-1, keepdims=True)
            margin = np.where(np_visible(x, mask), np.abs(z - tau), np.inf)
        else:
            return x
        if margin.min() > 0.05:
            return x
    raise AssertionError("no kink-free test point found")


@pytest.mark.parametrize("name", [*WEIGHTINGS, "log_normalizer", "log_normalizer_sink"])
def test_check_grads(name):
    shape = (2, 2, 2, 5)
    mask = random_mask(shape, seed=25, density=0.7, empty_rows=name != "log_normalizer")
    x = _kink_free_logits(name, shape, mask)
    fn = jax.jit(functools.partial(FUNCTIONS[name], mask=mask))
    with jax.enable_x64(True):
        check_grads(fn, (jnp.asarray(x),), order=1, modes=("rev", "fwd"))


@pytest.mark.parametrize("name", ["softmax_with_sink", "log_normalizer"])
def test_check_grads_with_respect_to_sink(name):
    x, mask = random_logits((2, 3, 2, 4), seed=26).astype(np.float64), random_mask((2, 3, 2, 4))

    @jax.jit
    def fn(sink):
        return FUNCTIONS[name](x, mask, sink_logit=sink)

    with jax.enable_x64(True):
        check_grads(fn, (jnp.array([0.5, -1.0, 2.0]),), order=1, modes=("rev", "fwd"))


def test_check_grads_with_respect_to_temperature_and_bias():
    x, mask = random_logits((2, 3, 2, 4), seed=27).astype(np.float64), random_mask((2, 3, 2, 4))
    with jax.enable_x64(True):
        check_grads(
            lambda t: W.softmax(x, mask, temperature=t), (jnp.array(0.7),), order=1, modes=("rev",)
        )
        check_grads(
            lambda b: W.sigmoid(x, mask, bias=b), (jnp.array(-0.3),), order=1, modes=("rev",)
        )


# --------------------------------------------------------------------------- transformations


@pytest.mark.parametrize("name", WEIGHTINGS)
def test_jit_vmap_grad_and_mask_objects(name):
    fn = FUNCTIONS[name]
    x = random_logits(seed=28)
    causal = masks.causal(offset=1)
    dense = np.broadcast_to(np.tril(np.ones((T, S), bool), k=1), x.shape)
    eager = fn(x, dense)
    np.testing.assert_allclose(jax.jit(fn)(x, causal), eager, rtol=1e-6, atol=1e-7)
    # vmap over the batch axis: the inner call sees rank-3 logits with a rank-3 mask.
    np.testing.assert_allclose(jax.vmap(fn)(x, dense), eager, rtol=1e-6, atol=1e-7)
    cotangent = random_logits(seed=29)

    def loss(x):
        return jnp.sum(fn(x, causal) * cotangent)

    # Gradient values are checked against finite differences in test_check_grads; here: the
    # transformations compose, and the mask object blocks gradient exactly like the array.
    grad = np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(x)))
    assert np.all(np.isfinite(grad)) and np.all(grad[~dense] == 0)
    assert np.count_nonzero(grad[dense]) > 0


def test_traced_mask_and_temperature_under_jit():
    x, mask = random_logits(seed=30), random_mask(seed=31)

    @jax.jit
    def run(x, mask, temperature):
        return W.softmax(x, mask, temperature=temperature)

    np.testing.assert_allclose(run(x, mask, 0.5), np_softmax(x, mask, 0.5), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("name", WEIGHTINGS)
def test_low_precision_inputs_compute_in_float32(name, dtype):
    fn = FUNCTIONS[name]
    x, mask = jnp.asarray(random_logits(seed=32), dtype), random_mask(seed=33)
    got = fn(x, mask)
    assert got.dtype == jnp.float32
    # The only rounding is the input's own: the same logits in float32 give the same weights.
    np.testing.assert_allclose(got, fn(x.astype(jnp.float32), mask), rtol=1e-6, atol=1e-7)
    grad = jax.grad(lambda x: jnp.sum(fn(x, mask) * jnp.arange(S)))(x)
    assert grad.dtype == dtype and np.all(np.isfinite(np.asarray(grad, np.float32)))


def test_float64_stays_float64():
    with jax.enable_x64(True):
        x = jnp.asarray(random_logits(seed=34), jnp.float64)
        for name in WEIGHTINGS:
            assert FUNCTIONS[name](x).dtype == jnp.float64, name
        assert W.log_normalizer(x).dtype == jnp.float64
        np.testing.assert_allclose(
            W.entmax15(x), np_sparse_map(np.asarray(x), alpha=1.5), atol=1e-12
        )


# --------------------------------------------------------------------------- the masking policy


@pytest.mark.parametrize("name", [*WEIGHTINGS, "log_normalizer_sink"])
def test_padding_mask_object_gives_zero_rows_and_zero_gradients(name):
    fn = FUNCTIONS[name]
    x = jnp.asarray(random_logits(seed=35))
    padding = masks.padding(kv_lengths=np.array([0, 3]))  # example 0 sees no key at all
    weights, vjp = jax.vjp(lambda x: fn(x, padding), x)
    (grad,) = vjp(jnp.ones_like(weights))
    weights, grad = np.asarray(weights), np.asarray(grad)
    if name == "log_normalizer_sink":
        np.testing.assert_allclose(weights[0], 0.5, atol=1e-6)  # only the sink is left
    else:
        assert np.all(weights[0] == 0) and np.all(weights[1, ..., 3:] == 0)
        if name in ("softmax", "softmax_with_sink", "sigmoid"):
            assert np.all(weights[1, ..., :3] > 0)
    assert np.all(grad[0] == 0) and np.all(grad[1, ..., 3:] == 0)


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_zero_keys_is_a_fully_masked_row(name):
    x = jnp.zeros((2, 3, 0))
    weights, vjp = jax.vjp(FUNCTIONS[name], x)
    assert weights.shape == ((2, 3) if name.startswith("log_normalizer") else (2, 3, 0))
    if name == "log_normalizer":
        assert np.all(np.isneginf(weights))
    assert vjp(jnp.ones_like(weights))[0].shape == x.shape


@pytest.mark.parametrize("name", WEIGHTINGS)
def test_masked_garbage_and_minus_inf_bias(name):
    fn = FUNCTIONS[name]
    x, mask = random_logits(seed=36), random_mask(seed=37)
    garbage = np.where(mask, x, np.array([np.nan, np.inf, -np.inf, 1e38])[np.arange(S) % 4])
    clean = fn(x, mask)
    np.testing.assert_array_equal(fn(garbage, mask), clean)
    # A -inf bias hides a key exactly as the mask does.
    biased = x + np.where(mask, 0.0, -np.inf).astype(np.float32)
    np.testing.assert_array_equal(fn(biased, None), clean)
    grad = jax.grad(lambda x: jnp.sum(fn(x, mask) * jnp.arange(S)))(jnp.asarray(garbage))
    assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[~mask] == 0)


SHAPES = [(1, 1, 1, 1), (2, 2, 3, 5)]  # few shapes, so the jitted check compiles rarely
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
# float16 tops out at 65504; 1e4-scale logits stay finite in every input dtype.
SCALES = {"normal": 2.0, "large": 1e4, "tiny": 1e-6}


@jax.jit
def _values_and_grads(logits, mask, cotangent):
    """Every function at once: one compilation per (shape, dtype) instead of one per function."""
    out = {}
    for name, fn in FUNCTIONS.items():
        weights, vjp = jax.vjp(lambda x, fn=fn: fn(x, mask), logits)
        row_cotangent = cotangent[..., 0] if weights.ndim < logits.ndim else cotangent
        out[name] = (weights, vjp(row_cotangent.astype(weights.dtype))[0])
    return out


@st.composite
def policy_cases(draw):
    shape = draw(st.sampled_from(SHAPES))
    dtype = draw(st.sampled_from(sorted(DTYPES)))
    scale = draw(st.sampled_from(sorted(SCALES)))
    density = draw(st.sampled_from([0.0, 0.3, 0.8, 1.0]))
    minus_inf = draw(st.sampled_from([0.0, 0.3]))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    # Clipped so that even squared_relu's gradient (2 x / S) fits in float16.
    x = np.clip(rng.standard_normal(shape) * SCALES[scale], -3e4, 3e4)
    x = np.where(rng.random(shape) < minus_inf, -np.inf, x)  # a -inf additive bias
    mask = rng.random(shape) < density
    if draw(st.booleans()):
        mask[tuple(rng.integers(0, d) for d in shape[:-1])] = False  # one fully masked row
    x = np.where(mask | (rng.random(shape) < 0.5), x, np.nan)  # garbage under the mask
    cotangent = rng.standard_normal(shape).astype(np.float32)
    return jnp.asarray(x, DTYPES[dtype]), mask, cotangent


@settings(max_examples=30, deadline=None)
@given(case=policy_cases())
def test_policy_no_nan_zero_masked_rows(case):
    x, mask, cotangent = case
    visible = mask & ~np.isneginf(np.asarray(x, np.float32))
    row_visible = visible.any(-1)
    for name, (weights, grad) in _values_and_grads(x, mask, cotangent).items():
        weights, grad = np.asarray(weights), np.asarray(grad, np.float32)
        assert grad.shape == x.shape, name
        assert np.all(np.isfinite(grad)), f"{name}: gradient not finite"
        assert np.all(grad[~visible] == 0), f"{name}: masked entries must get zero gradient"
        assert np.all(grad[~row_visible] == 0), f"{name}: fully masked rows: nonzero gradient"
        assert weights.dtype == np.float32, name
        if name == "log_normalizer":
            assert np.all(np.isfinite(weights[row_visible])), name
            assert np.all(np.isneginf(weights[~row_visible])), name
            continue
        assert np.all(np.isfinite(weights)), f"{name}: weights not finite"
        if name == "log_normalizer_sink":
            np.testing.assert_allclose(weights[~row_visible], 0.5, atol=1e-6)
            continue
        assert np.all(weights[~visible] == 0), f"{name}: masked entries must get weight 0"
        assert np.all(weights >= 0), name
        totals = weights.sum(-1)
        if name in NORMALIZED:
            np.testing.assert_allclose(totals[row_visible], 1.0, atol=1e-5, err_msg=name)
        elif name == "softmax_with_sink":
            assert np.all(totals <= 1.0 + 1e-6), name


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_errors_name_the_argument(name):
    fn = FUNCTIONS[name]
    with pytest.raises(TypeError, match="logits"):
        fn(np.ones((2, 3), np.int32))
    x = random_logits((2, 1, 3, 5))
    with pytest.raises(
        ValueError, match=re.escape("(2, 1, 3, 4)") + ".*" + re.escape("(2, 1, 3, 5)")
    ):
        fn(x, np.ones((2, 1, 3, 4), bool))
    # A mask may not grow the logits (logits [1, ...] with a mask [2, ...]).
    with pytest.raises(ValueError, match="mask of shape"):
        fn(x[:1], np.ones((2, 1, 3, 5), bool))
    with pytest.raises(TypeError, match="mask must be a boolean"):
        fn(x, np.ones((2, 1, 3, 5), np.float32))
    with pytest.raises(ValueError, match="Mask object needs rank-4"):
        fn(x[0], masks.causal())
    with pytest.raises(ValueError, match="rank >= 1"):
        fn(np.float32(1.0))


@pytest.mark.parametrize("fn", [W.softmax, W.log_normalizer])
@pytest.mark.parametrize("temperature", [0.0, -1.0, np.array([1.0, 0.0])])
def test_nonpositive_temperature_raises(fn, temperature):
    with pytest.raises(ValueError, match="temperature must be > 0"):
        fn(random_logits((1, 2, 3, 4)), temperature=temperature)


def test_bad_parameter_shapes_raise():
    x = random_logits((2, 3, 4, 5))
    with pytest.raises(ValueError, match="sink_logit of shape"):
        W.softmax_with_sink(x, sink_logit=np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="bias of shape"):
        W.sigmoid(x, bias=np.zeros((7,), np.float32))
    with pytest.raises(ValueError, match="scale of shape"):
        W.relu(x, scale=np.zeros((2, 2), np.float32))
    with pytest.raises(TypeError, match="sink_logit"):
        W.softmax_with_sink(x, sink_logit=np.array([True]))


@pytest.mark.parametrize("name", WEIGHTINGS)
def test_quiet_under_debug_infs_and_nans(name):
    """Masked entries and fully masked rows are computed with finite fills: op by op (eager),
    no intermediate value is infinite or NaN, forward or backward (log_normalizer's -inf for
    an empty row is its documented value, so it is left out)."""
    fn, logits = FUNCTIONS[name], random_logits()
    mask = random_mask()
    with jax.debug_infs(True), jax.debug_nans(True):
        weights = fn(logits, mask)
        grads = jax.grad(lambda x: jnp.sum(jnp.sin(fn(x, mask))))(logits)
    assert np.isfinite(weights).all() and np.isfinite(grads).all()
