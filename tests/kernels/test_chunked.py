"""The chunked kernel (and the Pallas one, interpreted on CPU) equal attend's dense composition:
values, lse and gradients, float32."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attn
from attn import masks, positional, weighting

B, T, S, N, H = 2, 11, 13, 4, 8
TOL = {"rtol": 1e-5, "atol": 1e-5}


def make_qkv(num_kv_heads=2, t=T, s=S, hv=H, seed=0):
    generator = np.random.default_rng(seed)
    q = generator.standard_normal((B, t, N, H)).astype(np.float32)
    k = generator.standard_normal((B, s, num_kv_heads, H)).astype(np.float32)
    v = generator.standard_normal((B, s, num_kv_heads, hv)).astype(np.float32)
    return q, k, v


pytestmark = pytest.mark.usefixtures("small_tiles")


def run(jit, implementation, q, k, v, make_kwargs, params=None, *, lse=True):
    """Output, lse and gradients for (q, k, v, params) under random cotangents."""
    generator = np.random.default_rng(7)
    out_cotangent = generator.standard_normal((B, q.shape[1], N, v.shape[-1])).astype(np.float32)
    lse_cotangent = generator.standard_normal((B, N, q.shape[1])).astype(np.float32)

    def forward(q, k, v, params):
        kwargs = make_kwargs(params)
        result = attn.attend(q, k, v, implementation=implementation, return_lse=lse, **kwargs)
        return result if lse else (result, None)

    def loss(q, k, v, params):
        out, row_lse = forward(q, k, v, params)
        total = jnp.sum(out * out_cotangent)
        if row_lse is not None:  # rows that see nothing have lse -inf and no gradient
            total = total + jnp.sum(jnp.where(jnp.isfinite(row_lse), row_lse * lse_cotangent, 0))
        return total

    def everything(q, k, v, params):
        grads = jax.grad(loss, argnums=(0, 1, 2, 3), allow_int=True)(q, k, v, params)
        return forward(q, k, v, params), grads

    return jit(everything)(q, k, v, params)


def _assert_same(
    jit, make_kwargs, params=None, *, num_kv_heads=2, lse=True, implementation="chunked", **shape
):
    """``implementation`` equals dense for ``attend(q, k, v, **make_kwargs(params))``; returns
    its ``((out, lse), grads)``."""
    q, k, v = make_qkv(num_kv_heads, **shape)
    got = run(jit, implementation, q, k, v, make_kwargs, params, lse=lse)
    want = run(jit, "dense", q, k, v, make_kwargs, params, lse=lse)
    flat_got, flat_want = jax.tree.leaves(got), jax.tree.leaves(want)
    assert len(flat_got) == len(flat_want)
    for a, b in zip(flat_got, flat_want, strict=True):
        if a.dtype != jax.dtypes.float0:  # integer inputs (lengths, ids) have no gradient
            np.testing.assert_allclose(a, b, **TOL)
    return got


@pytest.fixture
def assert_same(quick_jit):
    return functools.partial(_assert_same, quick_jit)


def segment_ids(length, seed):
    return np.sort(np.random.default_rng(seed).integers(0, 3, (B, length)), axis=1)


MASKS = {
    "none": None,
    "causal": masks.causal(),
    "causal_bottom_right": masks.causal(S - T),
    "causal_per_example": masks.causal(np.array([0, 3])),
    "window": masks.sliding_window(3, 1),
    "window_open_left": masks.sliding_window(None, 2),
    "chunked_causal": masks.chunked(4) & masks.causal(),
    "strided": masks.strided(3) & masks.causal(),
    "longformer": masks.global_tokens(2) | masks.sliding_window(1, 1),
    "prefix_lm": masks.prefix_lm(np.array([2, 5])),
    "padding": masks.padding(np.array([11, 4]), np.array([6, 13])),
    "padding_empty_example": masks.padding(q_lengths=np.array([0, 7])),
    "segments": masks.segments(segment_ids(T, 1), segment_ids(S, 2)),
    "random_blocks": masks.random_blocks(T, S, 4, 2, seed=3),
    "array": np.random.default_rng(4).random((B, 1, T, S)) > 0.4,
    "function": masks.from_fn(lambda b, h, i, j: (i + j + h) % 3 != 0),
    "negated": ~masks.causal(),
}


@pytest.mark.parametrize("implementation", ["chunked", "pallas"])
@pytest.mark.parametrize("name", sorted(MASKS))
def test_every_mask(name, implementation, assert_same):
    assert_same(lambda _: {"mask": MASKS[name]}, implementation=implementation)


@pytest.mark.parametrize("implementation", ["chunked", "pallas"])
@pytest.mark.parametrize("num_kv_heads", [N, 1])
def test_multi_head_and_multi_query(num_kv_heads, implementation, assert_same):
    assert_same(
        lambda _: {"mask": masks.causal()}, num_kv_heads=num_kv_heads, implementation=implementation
    )


def test_traced_mask_lengths_and_ids(assert_same):
    """Masks whose arrays are jit arguments: no static skipping, same results."""
    lengths, ids = np.array([9, 5]), segment_ids(T, 5)
    assert_same(
        lambda p: {"mask": masks.padding(kv_lengths=p["lengths"]) & masks.causal(2)},
        {"lengths": lengths},
    )
    assert_same(
        lambda p: {"mask": masks.segments(p["ids"]) | masks.causal()},
        {"ids": ids},
        s=T,
    )


@pytest.mark.parametrize("implementation", ["chunked", "pallas"])
def test_alibi_and_t5_rules_with_gradients(implementation, assert_same):
    """Bias rules are evaluated per tile; their slopes and table receive gradients."""
    assert_same = functools.partial(assert_same, implementation=implementation)
    slopes = np.asarray(positional.alibi_slopes(N))
    table = np.random.default_rng(6).standard_normal((16, N)).astype(np.float32)
    got = assert_same(
        lambda p: {"bias": positional.alibi_rule(p["slopes"], q_offset=2), "mask": masks.causal(2)},
        {"slopes": slopes},
    )
    assert np.abs(got[1][3]["slopes"]).max() > 0
    got = assert_same(
        lambda p: {
            "bias": positional.t5_relative_rule(p["table"], max_distance=10, q_offset=[0, 2])
        },
        {"table": table},
    )
    assert np.abs(got[1][3]["table"]).max() > 0


def test_bias_rules_equal_bias_arrays():
    q, k, v = make_qkv()
    table = np.random.default_rng(6).standard_normal((16, N)).astype(np.float32)
    for rule, array in [
        (positional.alibi_rule(N, q_offset=3), positional.alibi_bias(N, T, S, q_offset=3)),
        (
            positional.t5_relative_rule(table, bidirectional=False, max_distance=12),
            positional.t5_relative_bias(table, T, S, bidirectional=False, max_distance=12),
        ),
    ]:
        np.testing.assert_array_equal(
            attn.attend(q, k, v, bias=rule, implementation="dense"),
            attn.attend(q, k, v, bias=array, implementation="dense"),
        )


BIAS_SHAPES = {
    "full": (B, N, T, S),
    "per_head": (1, N, T, S),
    "key_only": (B, 1, 1, S),
    "query_only": (1, 1, T, 1),
    "rank_3": (N, T, S),
}


@pytest.mark.parametrize("implementation", ["chunked", "pallas"])
@pytest.mark.parametrize("name", sorted(BIAS_SHAPES))
def test_bias_arrays_with_gradients(name, implementation, assert_same):
    """A bias array is sliced per tile (ragged last tiles included); its gradient has its own
    shape, summed over the axes it broadcasts, as dense autodiff gives."""
    bias = np.random.default_rng(9).standard_normal(BIAS_SHAPES[name]).astype(np.float32)
    got = assert_same(
        lambda p: {"bias": p["bias"], "mask": masks.causal(2)},
        {"bias": bias},
        implementation=implementation,
    )
    grad = got[1][3]["bias"]
    assert grad.shape == bias.shape and np.abs(grad).max() > 0


def test_bias_array_with_temperature_and_whole_tiles(assert_same):
    """Lengths that are whole tiles (no clamped last tile) and a temperature dividing the bias."""
    bias = np.random.default_rng(10).standard_normal((1, N, 8, 12)).astype(np.float32)
    tempered = functools.partial(weighting.softmax, temperature=np.float32(0.5))
    assert_same(lambda p: {"bias": p["bias"], "weighting": tempered}, {"bias": bias}, t=8, s=12)


@pytest.mark.parametrize("implementation", ["chunked", "pallas"])
def test_logits_soft_cap_forward_and_backward(implementation, assert_same):
    """``cap * tanh((q . k + bias) / cap)`` with bias rules and arrays, a temperature and a
    sink; gradients go through the tanh (small cap: most logits saturate)."""
    assert_same = functools.partial(assert_same, implementation=implementation)
    bias = np.random.default_rng(11).standard_normal((1, N, T, S)).astype(np.float32)
    cases = [
        lambda p: {"logits_soft_cap": 0.7, "bias": p["bias"], "mask": masks.causal(2)},
        lambda p: {"logits_soft_cap": 1.5, "bias": positional.alibi_rule(N)},
        lambda p: {
            "logits_soft_cap": 1.0,
            "weighting": functools.partial(weighting.softmax, temperature=0.6),
            "score": "dot",
        },
        lambda p: {"logits_soft_cap": 2.0, "weighting": weighting.softmax_with_sink},
    ]
    for make_kwargs in cases:
        assert_same(make_kwargs, {"bias": bias})
    assert_same(lambda _: {"logits_soft_cap": 1.0, "weighting": "sigmoid"}, lse=False)


def test_soft_cap_changes_the_result(quick_jit):
    q, k, v = make_qkv()

    def both(q, k, v):
        return [
            attn.attend(q, k, v, logits_soft_cap=cap, implementation="chunked")
            for cap in (None, 0.5)
        ]

    plain, capped = quick_jit(both)(q, k, v)
    assert np.abs(plain - capped).max() > 1e-2


@pytest.mark.parametrize("implementation", ["chunked", "pallas"])
def test_precision_is_passed_to_every_matmul(implementation, assert_same):
    assert_same(
        lambda _: {"precision": "highest", "mask": masks.causal()}, implementation=implementation
    )


def _dot_precisions(jaxpr) -> list:
    """The ``precision`` of every dot_general in ``jaxpr`` and in the jaxprs it holds (scans,
    conds, a Pallas kernel)."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append(eqn.params["precision"])
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found += _dot_precisions(inner)
    return found


@pytest.mark.parametrize("implementation", ["chunked", "pallas"])
def test_every_matmul_is_traced_with_the_precision(implementation):
    """Float32 matmuls on CPU are exact at any precision, so values cannot show a matmul that
    drops it; the program can. The forward's weights-by-values matmul once did, and ran at the
    default precision whatever the call asked."""
    q, k, v = make_qkv()

    def loss(q, k, v):
        out = attn.attend(
            q, k, v, implementation=implementation, precision="highest", mask=masks.causal()
        )
        return jnp.sum(out * out)

    program = jax.make_jaxpr(jax.value_and_grad(loss, argnums=(0, 1, 2)))(q, k, v)
    precisions = _dot_precisions(program.jaxpr)
    # The forward's two matmuls (logits, weighted values) and the backward's five.
    assert len(precisions) >= 7
    highest = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)
    assert all(p == highest for p in precisions), precisions


@pytest.mark.parametrize(
    "weighting_fn",
    [
        functools.partial(weighting.softmax, temperature=0.7),
        weighting.softmax_with_sink,
        weighting.sigmoid,
        functools.partial(weighting.relu, scale=0.3),
        weighting.squared_relu,
    ],
    ids=["temperature", "sink", "sigmoid", "relu", "squared_relu"],
)
def test_weightings(weighting_fn, assert_same):
    base = getattr(weighting_fn, "func", weighting_fn)
    has_lse = base in (weighting.softmax, weighting.softmax_with_sink)
    assert_same(
        lambda _: {"mask": masks.sliding_window(4), "weighting": weighting_fn},
        lse=has_lse,
    )


def test_learned_weighting_parameters_and_bias_under_temperature(assert_same):
    """Per-head temperature (also dividing an ALiBi bias), sink, sigmoid bias and ReLU scale
    are differentiable through the kernel."""
    params = {
        "temperature": np.linspace(0.5, 2.0, N).astype(np.float32),
        "sink": np.linspace(-1.0, 1.0, N).astype(np.float32),
        "bias": np.float32(-1.5),
        "scale": np.linspace(0.1, 0.4, N).astype(np.float32),
    }
    causal = masks.causal()
    cases = [
        lambda p: {
            "weighting": functools.partial(weighting.softmax, temperature=p["temperature"]),
            "bias": positional.alibi_rule(N),
            "mask": causal,
        },
        lambda p: {
            "weighting": functools.partial(weighting.softmax_with_sink, sink_logit=p["sink"]),
            "mask": causal,
        },
    ]
    for make_kwargs in cases:
        assert_same(make_kwargs, params)
    for make_kwargs in [
        lambda p: {"weighting": functools.partial(weighting.sigmoid, bias=p["bias"])},
        lambda p: {"weighting": functools.partial(weighting.squared_relu, scale=p["scale"])},
    ]:
        assert_same(make_kwargs, params, lse=False)


@pytest.mark.parametrize(
    "score",
    ["dot", "cosine(temperature=0.2)", "general"],
)
def test_scores(score, assert_same):
    weight = np.random.default_rng(8).standard_normal((N, 8, 8)).astype(np.float32) / 3
    make_kwargs = (
        (lambda p: {"score": functools.partial(attn.scores.general, weight=p["w"])})
        if score == "general"
        else (lambda _: {"score": score, "mask": masks.causal()})
    )
    assert_same(make_kwargs, {"w": weight})


def test_one_query_and_value_width(assert_same):
    """Decoding shape (T = 1 against a cache) and values wider than keys."""
    assert_same(lambda _: {"mask": masks.causal(S - 1)}, t=1, hv=5)


def test_fully_masked_rows_are_zero_with_zero_gradients(quick_jit):
    q, k, v = make_qkv()
    nothing = masks.padding(q_lengths=np.array([T, 3]))

    def chunked(q):
        return attn.attend(q, k, v, mask=nothing, implementation="chunked", return_lse=True)

    out, lse = quick_jit(chunked)(q)
    grad_q = quick_jit(jax.grad(lambda q: chunked(q)[0].sum()))(q)
    assert not np.asarray(out[1, 3:]).any()
    assert np.isneginf(lse[1, :, 3:]).all()
    assert np.isfinite(grad_q).all() and not np.asarray(grad_q[1, 3:]).any()


def test_bfloat16_inputs(quick_jit):
    q, k, v = (jnp.asarray(x, jnp.bfloat16) for x in make_qkv())

    def both(q, k, v):
        return [
            attn.attend(q, k, v, mask=masks.causal(), implementation=implementation)
            for implementation in ("chunked", "dense")
        ]

    got, want = quick_jit(both)(q, k, v)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), atol=3e-2)


@pytest.mark.parametrize("weighting_name", ["softmax", "softmax_with_sink", "sigmoid", "relu"])
def test_quiet_under_debug_infs_and_nans(weighting_name):
    """Finite fills in the online weighting: no intermediate inf or NaN, op by op (eager) and
    jitted, forward and backward, with rows that see nothing in some tiles or at all."""
    q, k, v = make_qkv()
    mask = masks.padding(kv_lengths=np.array([0, 9])) & masks.causal()

    def loss(q, k, v):
        out = attn.attend(q, k, v, mask=mask, weighting=weighting_name, implementation="chunked")
        return jnp.sum(out**2)

    with jax.debug_infs(True), jax.debug_nans(True):
        for fn in (loss, jax.jit(loss)):
            value, grads = jax.value_and_grad(fn, argnums=(0, 1, 2))(q, k, v)
            assert np.isfinite(value) and all(np.isfinite(g).all() for g in grads)
        if weighting_name == "softmax":  # no empty row: the lse is finite too
            attn.attend(q, k, v, mask=masks.causal(), return_lse=True, implementation="chunked")
