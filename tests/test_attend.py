"""attend() against jax.nn.dot_product_attention and NumPy; the fully-masked-row policy."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

import attn
from attn import masks

B, T, S, N, H = 2, 6, 9, 4, 8


def make_qkv(num_kv_heads=N, t=T, s=S, rng=0, dtype=np.float32, hv=H):
    generator = np.random.default_rng(rng)
    q = generator.standard_normal((B, t, N, H)).astype(dtype)
    k = generator.standard_normal((B, s, num_kv_heads, H)).astype(dtype)
    v = generator.standard_normal((B, s, num_kv_heads, hv)).astype(dtype)
    return q, k, v


def numpy_attention(q, k, v, mask=None, bias=None):
    """Reference softmax attention; rows without a visible key output 0 (the project policy)."""
    group = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)
    logits = np.einsum("btnh,bsnh->bnts", q, k).astype(np.float64) / np.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + bias
    visible = np.ones(logits.shape, bool) if mask is None else np.broadcast_to(mask, logits.shape)
    logits = np.where(visible, logits, -np.inf)
    row_max = logits.max(-1, keepdims=True)
    exp = np.where(visible, np.exp(logits - np.where(np.isfinite(row_max), row_max, 0)), 0)
    total = exp.sum(-1, keepdims=True)
    weights = exp / np.where(total == 0, 1, total)
    return np.einsum("bnts,bsnh->btnh", weights, v), weights


@pytest.mark.parametrize("num_kv_heads", [N, 2, 1])
def test_unmasked_matches_jax_nn_and_numpy(num_kv_heads):
    q, k, v = make_qkv(num_kv_heads)
    got = attn.attend(q, k, v)
    want = jax.nn.dot_product_attention(q, k, v, implementation="xla")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, numpy_attention(q, k, v)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_kv_heads", [N, 2])
@pytest.mark.parametrize(
    ("mask", "jax_nn_kwargs"),
    [
        (masks.causal(), {"is_causal": True}),
        (masks.sliding_window(2, 1), {"local_window_size": (2, 1)}),
        (masks.sliding_window(3), {"local_window_size": (3, 0)}),
        (
            masks.causal() & masks.sliding_window(2),
            {"is_causal": True, "local_window_size": (2, 0)},
        ),
        (masks.padding(kv_lengths=np.array([4, 9])), {"key_value_seq_lengths": np.array([4, 9])}),
        (
            masks.padding(np.array([6, 3]), np.array([5, 2])),
            {"query_seq_lengths": np.array([6, 3]), "key_value_seq_lengths": np.array([5, 2])},
        ),
    ],
)
def test_masks_match_jax_nn(mask, jax_nn_kwargs, num_kv_heads):
    """Square inputs: jax.nn aligns causal/window masks at the top-left, as we do."""
    q, k, v = make_qkv(num_kv_heads, t=S, s=S)
    got = attn.attend(q, k, v, mask=mask)
    want = jax.nn.dot_product_attention(q, k, v, implementation="xla", **jax_nn_kwargs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bias_and_boolean_mask_match_jax_nn():
    q, k, v = make_qkv(2)
    generator = np.random.default_rng(5)
    bias = generator.standard_normal((1, N, T, S)).astype(np.float32)
    mask = generator.random((B, 1, T, S)) > 0.3
    mask[..., 0] = True  # jax.nn averages fully masked rows; keep every row visible here
    got = attn.attend(q, k, v, bias=bias, mask=mask)
    want = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, implementation="xla")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, numpy_attention(q, k, v, mask, bias)[0], rtol=1e-5, atol=1e-5)


def test_every_mask_against_numpy():
    q, k, v = make_qkv(2)
    for mask in [
        masks.chunked(3),
        masks.strided(2) & masks.causal(S - T),
        masks.global_tokens(1) | masks.sliding_window(1, 1),
        masks.prefix_lm(np.array([2, 4])),
        masks.segments(
            np.array([[0, 0, 1, 1, 1, 2]] * 2), np.array([[0] * 3 + [1] * 3 + [2] * 3] * 2)
        ),
        masks.random_blocks(T, S, 3, 1, seed=0),
    ]:
        dense = np.asarray(mask.dense((B, N, T, S)))
        got, weights = attn.attend(q, k, v, mask=mask, return_weights=True)
        want_out, want_weights = numpy_attention(q, k, v, dense)
        np.testing.assert_allclose(got, want_out, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(weights, want_weights, rtol=1e-5, atol=1e-6)


def test_fully_masked_rows_output_zero_with_zero_gradients():
    """The project's policy, on purpose unlike jax.nn and flax (they average uniformly)."""
    q, k, v = make_qkv(2)
    mask = masks.padding(q_lengths=np.array([6, 2]))  # example 1: queries 2.. see nothing
    out = attn.attend(q, k, v, mask=mask)
    assert not np.asarray(out[1, 2:]).any()
    grads = jax.grad(lambda q, k, v: attn.attend(q, k, v, mask=mask).sum(), argnums=(0, 1, 2))(
        q, k, v
    )
    assert all(np.isfinite(g).all() for g in grads)
    assert not np.asarray(grads[0][1, 2:]).any()
    # Keys of example 1 get gradient only from its 2 visible queries.
    nothing_visible = np.zeros((B, 1, T, S), bool)
    grads = jax.grad(lambda q: attn.attend(q, k, v, mask=nothing_visible).sum())(q)
    assert not np.asarray(grads).any()


def test_lse_matches_logsumexp_and_weights_sum_to_one():
    q, k, v = make_qkv()
    mask = masks.causal(S - T) & masks.padding(q_lengths=np.array([6, 3]))
    out, weights, lse = attn.attend(q, k, v, mask=mask, return_weights=True, return_lse=True)
    dense = np.broadcast_to(np.asarray(mask.dense((B, N, T, S))), (B, N, T, S))
    logits = np.asarray(attn.scores.scaled_dot(q, k), np.float64)
    with np.errstate(divide="ignore"):  # log(0) = -inf is the expected value for empty rows
        want = np.log(np.where(dense, np.exp(logits), 0).sum(-1))
    np.testing.assert_allclose(lse, want, rtol=1e-5)
    assert np.isneginf(lse[1, :, 3:]).all()
    row_sums = np.asarray(weights).sum(-1)
    np.testing.assert_allclose(row_sums[0], 1.0, rtol=1e-5)
    np.testing.assert_allclose(row_sums[1, :, 3:], 0.0)
    assert out.shape == (B, T, N, H)


def test_lse_with_temperature_and_sink():
    q, k, v = make_qkv()
    logits = np.asarray(attn.scores.scaled_dot(q, k), np.float64)
    _, lse = attn.attend(
        q,
        k,
        v,
        weighting=functools.partial(attn.weighting.softmax, temperature=2.0),
        return_lse=True,
    )
    np.testing.assert_allclose(lse, np.log(np.exp(logits / 2.0).sum(-1)), rtol=1e-5)
    _, lse = attn.attend(q, k, v, weighting="softmax_with_sink", return_lse=True)
    np.testing.assert_allclose(lse, np.log(1.0 + np.exp(logits).sum(-1)), rtol=1e-5)
    with pytest.raises(ValueError, match="log-sum-exp"):
        attn.attend(q, k, v, weighting="sparsemax", return_lse=True)


def test_catalog_names_are_accepted():
    q, k, v = make_qkv()
    by_name = attn.attend(q, k, v, score="cosine(temperature=0.5)", weighting="entmax15")
    by_function = attn.attend(
        q,
        k,
        v,
        score=functools.partial(attn.scores.cosine, temperature=0.5),
        weighting=attn.weighting.entmax15,
    )
    np.testing.assert_array_equal(by_name, by_function)


def test_dropout():
    q, k, v = make_qkv()
    rng = jax.random.key(0)
    plain = attn.attend(q, k, v)
    np.testing.assert_array_equal(attn.attend(q, k, v, dropout_rate=0.0, rng=rng), plain)
    first = attn.attend(q, k, v, dropout_rate=0.5, rng=rng)
    np.testing.assert_array_equal(first, attn.attend(q, k, v, dropout_rate=0.5, rng=rng))
    assert not np.allclose(first, plain)
    _, weights = attn.attend(q, k, v, dropout_rate=0.5, rng=rng, return_weights=True)
    np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, rtol=1e-5)  # before dropout
    # Unbiased: the average over many draws approaches the plain output.
    draws = jax.vmap(lambda r: attn.attend(q, k, v, dropout_rate=0.3, rng=r))(
        jax.random.split(rng, 400)
    )
    np.testing.assert_allclose(draws.mean(0), plain, atol=0.15)


def test_jit_vmap_and_traced_masks():
    q, k, v = make_qkv(2)

    @jax.jit
    def padded(q, k, v, kv_lengths):
        return attn.attend(q, k, v, mask=masks.padding(kv_lengths=kv_lengths) & masks.causal(3))

    lengths = np.array([7, 4])
    want = numpy_attention(
        q,
        k,
        v,
        np.asarray((masks.padding(kv_lengths=lengths) & masks.causal(3)).dense((B, N, T, S))),
    )[0]
    np.testing.assert_allclose(padded(q, k, v, lengths), want, rtol=1e-5, atol=1e-5)
    # A mask is a pytree, so it can be a jit argument.
    jitted = jax.jit(lambda q, k, v, mask: attn.attend(q, k, v, mask=mask))
    np.testing.assert_allclose(
        jitted(q, k, v, masks.padding(kv_lengths=jnp.asarray(lengths)) & masks.causal(3)),
        want,
        rtol=1e-5,
        atol=1e-5,
    )
    stacked = jax.vmap(lambda q: attn.attend(q, k, v))(np.stack([q, -q]))
    np.testing.assert_allclose(stacked[1], attn.attend(-q, k, v), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weighting", ["softmax", "sparsemax", "entmax15", "sigmoid", "relu"])
def test_gradients(weighting):
    q, k, v = make_qkv(2, dtype=np.float64)
    mask = masks.causal(S - T) & masks.padding(q_lengths=np.array([6, 4]))
    with jax.enable_x64():
        check_grads(
            lambda q, k, v: attn.attend(q, k, v, mask=mask, weighting=weighting),
            (q, k, v),
            order=1,
            modes=("rev",),
            atol=1e-4,
            rtol=1e-4,
        )


def test_bfloat16_inputs():
    q, k, v = make_qkv(2)
    low = attn.attend(*(x.astype(jnp.bfloat16) for x in (q, k, v)), mask=masks.causal(S - T))
    assert low.dtype == jnp.bfloat16
    high = attn.attend(q, k, v, mask=masks.causal(S - T))
    np.testing.assert_allclose(np.asarray(low, np.float32), high, atol=5e-2)


WEIGHTINGS = [
    "softmax",
    "softmax_with_sink",
    "sparsemax",
    "entmax15",
    "sigmoid",
    "relu",
    "squared_relu",
]
# Weights bounded by 1 per key: outputs stay in range even for huge logits. ReLU weights grow with
# the logits, so large inputs overflow float16 outputs for a reason unrelated to masking.
BOUNDED = {"softmax", "softmax_with_sink", "sparsemax", "entmax15", "sigmoid"}


@functools.partial(jax.jit, static_argnames="weighting")
def output_and_grads(q, k, v, mask, weighting):
    def loss(q, k, v):
        return attn.attend(q, k, v, mask=mask, weighting=weighting).astype(jnp.float32).sum()

    return attn.attend(q, k, v, mask=mask, weighting=weighting), jax.grad(loss, (0, 1, 2))(q, k, v)


@pytest.mark.slow  # a property search: each example compiles 7 weightings' gradients
@settings(max_examples=8, deadline=None)
@given(
    t=st.integers(1, 6),
    s=st.integers(1, 7),
    num_kv_heads=st.sampled_from([1, 2, 4]),
    dtype=st.sampled_from([jnp.float32, jnp.bfloat16, jnp.float16]),
    seed=st.integers(0, 2**16),
    large=st.booleans(),
)
def test_no_nan_and_masked_rows_zero(t, s, num_kv_heads, dtype, seed, large):
    generator = np.random.default_rng(seed)
    mask = generator.random((B, N, t, s)) > 0.5
    mask[0, :, 0] = False  # at least one fully masked row
    empty_rows = ~mask.any(-1)  # [B, N, t]
    for weighting in WEIGHTINGS:
        scale = 100.0 if large and weighting in BOUNDED else 1.0
        q, k, v = (jnp.asarray(x * scale, dtype) for x in make_qkv(num_kv_heads, t, s, seed))
        out, (grad_q, grad_k, grad_v) = output_and_grads(q, k, v, mask, weighting)
        out_bnt = np.asarray(out, np.float32).transpose(0, 2, 1, 3)
        grad_bnt = np.asarray(grad_q, np.float32).transpose(0, 2, 1, 3)
        for array in (out_bnt, grad_bnt, grad_k, grad_v):
            assert np.isfinite(np.asarray(array, np.float32)).all(), weighting
        assert not out_bnt[empty_rows].any() and not grad_bnt[empty_rows].any(), weighting


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"q": np.zeros((2, 3, 4))}, ValueError, "same leading batch axes"),
        ({"q": np.zeros((3, 4))}, ValueError, r"q must be an array \[\.\.\., T, N, H\]"),
        ({"scale": 0.5, "score": "cosine"}, ValueError, "scale=0.5 is the logit scale"),
        ({"scale": 0.5, "score": "dot"}, ValueError, "score dot sets its own scaling"),
        ({"logits_dtype": jnp.bfloat16}, ValueError, "logits_dtype must be float32 or float64"),
        ({"logits_soft_cap": -1.0}, ValueError, "logits_soft_cap must be a positive"),
        (
            {"precision": "highest", "score": lambda q, k: attn.scores.dot(q, k)},
            ValueError,
            "precision='highest' applies to the dot products",
        ),
        ({"dropout_rate": np.float32(1.5), "rng": jax.random.key(0)}, ValueError, "in \\[0, 1\\)"),
        (
            {"bias": np.zeros((3, B, N, T, S), np.float32)},
            ValueError,
            "has more axes than",
        ),
        ({"v": np.zeros((B, S + 1, N, H), np.float32)}, ValueError, r"k and v must agree"),
        ({"v": np.zeros((B, S, N, H), np.int32)}, TypeError, "v must be a float"),
        ({"k": np.zeros((B, S, 3, H), np.float32)}, ValueError, "multiple of key heads"),
        ({"implementation": "magic"}, ValueError, "implementation must be one of"),
        ({"dropout_rate": 1.0}, ValueError, "dropout_rate"),
        ({"dropout_rate": 0.1}, ValueError, "needs an rng"),
        ({"bias": np.zeros((3, T, S), np.float32)}, ValueError, "bias of shape"),
        ({"bias": np.zeros((T, S), bool)}, TypeError, "bias must be a float"),
        ({"mask": np.ones((T, S + 1), bool)}, ValueError, "does not broadcast"),
        ({"mask": np.ones((T, S), np.int32)}, TypeError, "boolean"),
        ({"score": "dott"}, ValueError, "valid score names: additive, cosine, dot"),
        ({"weighting": "softmaxx"}, ValueError, "valid weighting names"),
        ({"score": lambda q, k: q}, ValueError, "returned"),
        ({"mask": "causal"}, TypeError, "mask must be an attn.masks.Mask.*got the string"),
        ({"weighting": 42}, TypeError, "weighting must be a catalog spec .* got int 42"),
        ({"score": None}, TypeError, "score must be a catalog spec .* got NoneType"),
        ({"rng": 0, "dropout_rate": 0.1}, TypeError, "rng must be a jax.random key"),
        ({"rng": np.zeros(2, np.int32)}, TypeError, "rng must be a jax.random key"),
        (
            {"k": np.zeros((B, S, N, H + 1), np.float32)},
            ValueError,
            "score scaled_dot needs q and k with the same head features H",
        ),
        ({"k": np.zeros((B, S, 0, H), np.float32)}, ValueError, r"N, K, H >= 1"),
        (
            {"q": np.zeros((B, T, N, 0), np.float32), "k": np.zeros((B, S, N, 0), np.float32)},
            ValueError,
            r"N, K, H >= 1",
        ),
    ],
)
def test_bad_input_raises_a_clear_error(kwargs, error, message):
    q, k, v = make_qkv()
    args = {"q": q, "k": k, "v": v}
    args.update({name: kwargs.pop(name) for name in ("q", "k", "v") if name in kwargs})
    with pytest.raises(error, match=message):
        attn.attend(args["q"], args["k"], args["v"], **kwargs)


@pytest.mark.parametrize("implementation", ["dense", "chunked", "pallas", "auto"])
@pytest.mark.parametrize(("t", "s"), [(0, S), (T, 0), (0, 0)])
def test_empty_sequences_give_the_same_result_everywhere(t, s, implementation):
    """T = 0: an empty output; S = 0: every query sees nothing (0, lse -inf, gradient 0)."""
    q, k, v = make_qkv(2, t=t, s=s)
    mask = masks.causal()

    def loss(q, k, v):
        out, _ = attn.attend(q, k, v, mask=mask, return_lse=True, implementation=implementation)
        return out.sum()

    out, lse = attn.attend(q, k, v, mask=mask, return_lse=True, implementation=implementation)
    assert out.shape == (B, t, N, H) and lse.shape == (B, N, t)
    assert not np.asarray(out).any() and np.all(np.asarray(lse) == -np.inf)
    for grad in jax.grad(loss, argnums=(0, 1, 2))(q, k, v):
        assert not np.asarray(grad).any()
    if t and not s:
        chunked = attn.kernels.chunked_attention(q, k, v, return_lse=True)
        np.testing.assert_array_equal(chunked[0], out)
        np.testing.assert_array_equal(chunked[1], lse)


@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_dense_is_quiet_under_debug_infs_and_nans(weighting):
    """Finite fills: no intermediate inf or NaN, op by op (eager) and jitted, forward and
    backward, with fully masked rows (example 0 sees no key)."""
    q, k, v = make_qkv(2)
    mask = masks.padding(kv_lengths=np.array([0, 7])) & masks.causal(S - T)

    def loss(q, k, v):
        return jnp.sum(attn.attend(q, k, v, mask=mask, weighting=weighting) ** 2)

    with jax.debug_infs(True), jax.debug_nans(True):
        for fn in (loss, jax.jit(loss)):
            value, grads = jax.value_and_grad(fn, argnums=(0, 1, 2))(q, k, v)
            assert np.isfinite(value) and all(np.isfinite(g).all() for g in grads)
        if weighting == "softmax":  # no empty row: the lse is finite too
            attn.attend(q, k, v, mask=masks.causal(S - T), return_lse=True)


KV_LENGTHS, Q_LENGTHS = np.array([5, 9]), np.array([6, 4])
HIDING_MASKS = {
    "padding": lambda: masks.padding(kv_lengths=KV_LENGTHS),
    "key_array": lambda: np.arange(S)[None, None, None, :] < KV_LENGTHS[:, None, None, None],
    "causal_and_padding": lambda: masks.causal(S - T) & masks.padding(Q_LENGTHS, KV_LENGTHS),
    "window_and_key_array": lambda: (
        masks.sliding_window(4) & masks.from_array(np.arange(S) < KV_LENGTHS[:, None, None, None])
    ),
}


@pytest.mark.parametrize("implementation", ["dense", "chunked", "pallas"])
@pytest.mark.parametrize("name", sorted(HIDING_MASKS))
def test_non_finite_inputs_at_hidden_positions_do_not_leak(name, implementation):
    """NaN and inf in padded keys, values (and queries) change no output and no gradient."""
    mask = HIDING_MASKS[name]()
    hidden_keys = np.arange(S)[None, :] >= KV_LENGTHS[:, None]  # [B, S]
    hidden_queries = (np.arange(T)[None, :] >= Q_LENGTHS[:, None]) & ("causal" in name)
    clean = make_qkv(2)
    poisoned = [x.copy() for x in clean]
    poisoned[0][hidden_queries] = np.nan
    poisoned[1][hidden_keys] = np.inf
    poisoned[2][hidden_keys] = np.nan
    zeroed = [x.copy() for x in clean]
    zeroed[0][hidden_queries] = 0
    zeroed[1][hidden_keys] = zeroed[2][hidden_keys] = 0

    def loss(q, k, v):
        out = attn.attend(q, k, v, mask=mask, implementation=implementation)
        return jnp.sum(jnp.sin(out)), out

    want, got = (
        jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(*inputs)
        for inputs in (zeroed, poisoned)
    )
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert np.isfinite(a).all()
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- parity arguments


@pytest.mark.parametrize("implementation", ["dense", "chunked"])
def test_inputs_without_a_batch_axis_match_jax_nn(implementation):
    q, k, v = (x[0] for x in make_qkv(2))
    bias = np.random.default_rng(3).standard_normal((N, T, S)).astype(np.float32)
    mask = np.random.default_rng(4).random((1, T, S)) > 0.3
    mask[..., 0] = True  # every row sees a key (jax.nn averages empty rows)
    out, weights, lse = attn.attend(
        q,
        k,
        v,
        bias=bias,
        mask=mask,
        implementation="dense",
        return_weights=True,
        return_lse=True,
    )
    assert out.shape == (T, N, H) and weights.shape == (N, T, S) and lse.shape == (N, T)
    want = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, implementation="xla")
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    got = attn.attend(q, k, v, bias=bias, mask=mask, implementation=implementation)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("implementation", ["dense", "chunked"])
def test_several_batch_axes_equal_one_call_per_example(implementation):
    """q [2, 3, T, N, H]: mask and bias arrays broadcast over the leading axes, a Mask's b is
    the flattened (row-major) example index, and a bias gets its own gradient shape."""
    generator = np.random.default_rng(5)
    lead = (2, 3)
    q = generator.standard_normal((*lead, T, N, H)).astype(np.float32)
    k = generator.standard_normal((*lead, S, 2, H)).astype(np.float32)
    v = generator.standard_normal((*lead, S, 2, H)).astype(np.float32)
    bias = generator.standard_normal((2, 1, N, T, S)).astype(np.float32)  # per first axis
    mask = generator.random((1, 3, 1, T, S)) > 0.3  # per second axis
    lengths = np.arange(6) + 3  # example (i, j) is number i * 3 + j

    def loss(bias):
        out = attn.attend(q, k, v, bias=bias, mask=mask, implementation=implementation)
        return jnp.sum(out**2), out

    (_, got), grad = jax.value_and_grad(loss, has_aux=True)(bias)
    padded = attn.attend(q, k, v, mask=masks.padding(kv_lengths=lengths), implementation="dense")
    assert got.shape == (*lead, T, N, H)
    for i, j in np.ndindex(*lead):
        one = (q[i, j][None], k[i, j][None], v[i, j][None])
        want = attn.attend(*one, bias=bias[i], mask=mask[0, j][None])[0]
        np.testing.assert_allclose(got[i, j], want, rtol=1e-5, atol=1e-5)
        want = attn.attend(*one, mask=masks.padding(kv_lengths=lengths[i * 3 + j, None]))[0]
        np.testing.assert_allclose(padded[i, j], want, rtol=1e-5, atol=1e-5)
    want_grad = jax.grad(
        lambda b: jnp.sum(attn.attend(q, k, v, bias=b, mask=mask, implementation="dense") ** 2)
    )(bias)
    assert grad.shape == bias.shape
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-5)
    _, weights, lse = attn.attend(q, k, v, return_weights=True, return_lse=True)
    assert weights.shape == (*lead, N, T, S) and lse.shape == (*lead, N, T)


def test_scale_is_jax_nn_scale():
    q, k, v = make_qkv(2)
    got = attn.attend(q, k, v, scale=0.3)
    want = jax.nn.dot_product_attention(q, k, v, scale=0.3, implementation="xla")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    by_score = attn.attend(q, k, v, score=functools.partial(attn.scores.scaled_dot, scale=0.3))
    np.testing.assert_array_equal(got, by_score)
    traced = jax.jit(lambda scale: attn.attend(q, k, v, scale=scale))(0.3)
    np.testing.assert_allclose(traced, got, rtol=1e-6, atol=1e-6)


def test_logits_soft_cap_is_tanh_after_the_bias():
    """cap * tanh((q . k / sqrt(H) + bias) / cap), then the mask and softmax (tokamax's order)."""
    q, k, v = make_qkv()
    bias = np.random.default_rng(6).standard_normal((1, N, T, S)).astype(np.float32) * 3
    mask = np.asarray(masks.causal(S - T).dense((B, N, T, S)))
    logits = np.asarray(attn.scores.scaled_dot(q, k), np.float64) + bias
    capped = 2.0 * np.tanh(logits / 2.0)
    weights = np.where(mask, np.exp(capped - capped.max(-1, keepdims=True)), 0)
    weights = weights / weights.sum(-1, keepdims=True)
    want = np.einsum("bnts,bsnh->btnh", weights, v)
    got = attn.attend(q, k, v, bias=bias, mask=mask, logits_soft_cap=2.0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # A -inf bias is capped like any value (to -cap), as in tokamax: hide keys with a mask.
    hidden = np.where(mask, 0.0, -np.inf).astype(np.float32)
    assert np.abs(attn.attend(q, k, v, bias=hidden, logits_soft_cap=2.0) - got).max() > 1e-3


def test_logits_dtype_and_precision():
    q, k, v = make_qkv(2)
    np.testing.assert_array_equal(
        attn.attend(q, k, v, precision="highest"),
        attn.attend(q, k, v, precision=jax.lax.Precision.HIGHEST),
    )
    with jax.enable_x64():
        wide = attn.attend(q, k, v, logits_dtype=jnp.float64, return_weights=True)
        assert wide[0].dtype == jnp.float32 and wide[1].dtype == jnp.float64
        want = numpy_attention(q, k, v)[0]
        np.testing.assert_allclose(wide[0], want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="needs 64-bit jax"):
        attn.attend(q, k, v, logits_dtype=jnp.float64)


def test_dropout_rate_may_be_an_array_and_vmapped():
    """A vmapped rate (a sweep's trials) gives each rate's own result, 0 included."""
    q, k, v = make_qkv()
    rng = jax.random.key(1)
    rates = jnp.array([0.0, 0.25, 0.5])
    stacked = jax.jit(jax.vmap(lambda r: attn.attend(q, k, v, dropout_rate=r, rng=rng)))(rates)
    for rate, got in zip([0.0, 0.25, 0.5], stacked, strict=True):
        np.testing.assert_allclose(
            got, attn.attend(q, k, v, dropout_rate=rate, rng=rng), rtol=1e-6, atol=1e-6
        )
    with pytest.raises(ValueError, match="a traced rate needs one even when it is 0"):
        jax.jit(lambda r: attn.attend(q, k, v, dropout_rate=r))(0.0)
    with pytest.raises(ValueError, match="cannot apply dropout"):
        jax.jit(lambda r: attn.attend(q, k, v, dropout_rate=r, rng=rng, implementation="chunked"))(
            0.0
        )


def test_broadcast_dropout_shares_one_mask():
    q, k, v = make_qkv()
    rng = jax.random.key(2)
    _, weights = attn.attend(q, k, v, return_weights=True)
    identity = np.broadcast_to(np.eye(S, dtype=np.float32)[:, None], (B, S, N, S))
    # v = identity rows: the output is the dropped weights themselves, [B, T, N, S].
    dropped = attn.attend(
        q, k, identity, dropout_rate=0.5, rng=rng, broadcast_dropout=True
    ).transpose(0, 2, 1, 3)
    kept = np.asarray(dropped) != 0
    np.testing.assert_array_equal(kept, np.broadcast_to(kept[:1, :1], kept.shape))
    np.testing.assert_allclose(np.where(kept, np.asarray(weights) * 2, 0), dropped, rtol=1e-5)
    assert 0.3 < kept.mean() < 0.7
