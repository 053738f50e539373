"""attend(implementation=...): clear errors for what an implementation cannot honour, the
"auto" choice, and jax.nn's translation of masks (checked through its XLA path on CPU)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attn
from attn import masks, positional, weighting
from attn.kernels import dispatch, jax_nn
from attn.kernels.request import Request

B, T, S, N, H = 2, 6, 9, 4, 8


def make_qkv(t=T, s=S, num_kv_heads=2, dtype=np.float32):
    generator = np.random.default_rng(0)
    q = generator.standard_normal((B, t, N, H)).astype(dtype)
    k = generator.standard_normal((B, s, num_kv_heads, H)).astype(dtype)
    v = generator.standard_normal((B, s, num_kv_heads, H)).astype(dtype)
    return q, k, v


def partial_softmax(temperature):
    return functools.partial(weighting.softmax, temperature=temperature)


def request(q, k, v, **kwargs):
    fields = {
        "score": attn.scores.scaled_dot,
        "weighting": weighting.softmax,
        "mask": None,
        "bias": None,
        "dropout_rate": 0.0,
        "rng": None,
        "return_weights": False,
        "return_lse": False,
    }
    return Request(q=q, k=k, v=v, **{**fields, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dropout_rate": 0.1, "rng": jax.random.key(0)}, "cannot apply dropout"),
        ({"return_weights": True}, "cannot return weights"),
        ({"weighting": "sparsemax"}, "cannot apply weighting sparsemax"),
        (
            {"score": functools.partial(attn.scores.additive, w_q=0, w_k=0, v=0)},
            "cannot compute score additive",
        ),
        (
            {"logits_soft_cap": 2.0, "weighting": partial_softmax(np.ones(N, np.float32))},
            "cannot combine logits_soft_cap with a softmax temperature that is an array",
        ),
    ],
)
@pytest.mark.parametrize("implementation", ["chunked", "pallas"])
def test_tiled_kernels_name_what_they_cannot_do(kwargs, message, implementation):
    with pytest.raises(ValueError, match=f"implementation='{implementation}' {message}"):
        attn.attend(*make_qkv(), implementation=implementation, **kwargs)


@pytest.mark.parametrize("implementation", ["chunked", "pallas"])
def test_tiled_kernels_refuse_traced_soft_caps_and_float64_logits(implementation):
    q, k, v = make_qkv()
    traced = jax.jit(
        lambda cap: attn.attend(q, k, v, logits_soft_cap=cap, implementation=implementation)
    )
    with pytest.raises(ValueError, match="cannot take a traced logits_soft_cap"):
        traced(2.0)
    np.testing.assert_allclose(  # dense takes it traced
        jax.jit(lambda cap: attn.attend(q, k, v, logits_soft_cap=cap, implementation="dense"))(2.0),
        attn.attend(q, k, v, logits_soft_cap=2.0, implementation=implementation),
        rtol=1e-5,
        atol=1e-5,
    )
    with jax.enable_x64(), pytest.raises(ValueError, match="cannot compute logits in float64"):
        attn.attend(q, k, v, logits_dtype=jnp.float64, implementation=implementation)


def test_bias_rules_must_be_traceable():
    with pytest.raises(ValueError, match="traced indices"):
        attn.attend(*make_qkv(), bias=lambda b, h, i, j: np.sin(i - j), implementation="chunked")


def test_per_key_weighting_parameters_are_refused_by_chunked():
    bias = np.zeros((1, N, T, S), np.float32)
    with pytest.raises(ValueError, match="one value per query row"):
        attn.attend(
            *make_qkv(),
            weighting=functools.partial(weighting.sigmoid, bias=bias),
            implementation="chunked",
        )


def test_cudnn_needs_a_gpu_and_half_precision():
    if jax.default_backend() != "gpu":
        with pytest.raises(ValueError, match="cuDNN needs a GPU"):
            attn.attend(*make_qkv(), implementation="cudnn")
    reason = jax_nn.unsupported(request(*make_qkv()), backend="gpu")
    assert "float16 or bfloat16" in reason
    low = request(*make_qkv(dtype=jnp.bfloat16), weighting=weighting.entmax15)
    assert "weighting entmax15" in jax_nn.unsupported(low, backend="gpu")
    for kwargs, reason in [
        ({"logits_soft_cap": 30.0}, "has no soft cap"),
        ({"precision": "highest"}, "has no precision argument"),
        ({"logits_dtype": jnp.float64}, "logits in float64"),
    ]:
        low = request(*make_qkv(dtype=jnp.bfloat16), **kwargs)
        assert reason in jax_nn.unsupported(low, backend="gpu")


def test_auto_picks_by_shape_and_features(monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    short = request(*make_qkv())
    long = request(*make_qkv(t=512, s=512))
    assert dispatch.choose(short) == "dense"
    assert dispatch.choose(long) == "chunked"
    dropout = request(*make_qkv(t=512, s=512), dropout_rate=0.1, rng=jax.random.key(0))
    assert dispatch.choose(dropout) == "dense"
    assert dispatch.choose(request(*make_qkv(t=512, s=512), weighting=weighting.sparsemax)) == (
        "dense"
    )
    bias = np.zeros((1, N, 512, 512), np.float32)
    assert dispatch.choose(request(*make_qkv(t=512, s=512), bias=bias)) == "chunked"
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert dispatch.choose(request(*make_qkv(t=512, s=512, dtype=jnp.bfloat16))) == "cudnn"
    assert dispatch.choose(long) == "chunked"  # float32: not for cuDNN; Pallas is opt-in


def test_auto_equals_dense_either_side_of_the_threshold(quick_jit):
    def both(q, k, v):
        return [
            attn.attend(q, k, v, mask=masks.causal(), implementation=implementation)
            for implementation in ("auto", "dense")
        ]

    for length in (8, 512):
        got, want = quick_jit(both)(*make_qkv(t=length, s=length))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


NATIVE_MASKS = [
    None,
    masks.causal(),
    masks.sliding_window(2, 1),
    masks.sliding_window(None, 0),
    masks.causal() & masks.sliding_window(2),
    masks.padding(np.array([6, 2]), np.array([9, 3])),
    masks.padding(kv_lengths=np.array([0, 4])) & masks.causal(),  # example 0 sees nothing
    masks.sliding_window(0, 0) & masks.padding(kv_lengths=np.array([3, 9])),  # empty rows
    masks.chunked(3),  # not native: passed as a dense mask array
    np.random.default_rng(1).random((B, 1, T, S)) > 0.5,
    masks.padding(kv_lengths=np.array([3, 9])) & masks.padding(np.array([2, 6])) & masks.causal(),
    masks.causal(2) & masks.sliding_window(4),  # a right window: a dense mask array for cuDNN
]


@pytest.mark.parametrize("index", range(len(NATIVE_MASKS)))
def test_jax_nn_translation_equals_dense(index, quick_jit):
    """Through jax.nn's XLA path: same values, lse and the zero policy for empty rows."""
    mask = NATIVE_MASKS[index]
    mask = None if mask is None else masks.as_mask(mask)
    bias = positional.alibi_rule(N)

    def both(q, k, v):
        got = jax_nn.attention(
            request(q, k, v, mask=mask, bias=bias, return_lse=True), implementation="xla"
        )
        want = attn.attend(q, k, v, mask=mask, bias=bias, return_lse=True, implementation="dense")
        return got, want

    (got_out, got_lse), (want_out, want_lse) = quick_jit(both)(*make_qkv())
    np.testing.assert_allclose(got_out, want_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_lse, want_lse, rtol=1e-5, atol=1e-5)


def test_jax_nn_translation_of_temperature_and_scale(quick_jit):
    tempered = functools.partial(weighting.softmax, temperature=2.0)

    def both(q, k, v):
        got = jax_nn.attention(
            request(q, k, v, score=attn.scores.dot, weighting=tempered), implementation="xla"
        )
        return got, attn.attend(q, k, v, score="dot", weighting=tempered, implementation="dense")

    got, want = quick_jit(both)(*make_qkv())
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("mask", "native"),
    [
        (masks.causal(), {"is_causal"}),
        (masks.sliding_window(None, 0), {"is_causal"}),
        (masks.causal() & masks.sliding_window(2), {"is_causal", "local_window_size"}),
        (
            masks.padding(np.array([2, 6])) & masks.padding(kv_lengths=4) & masks.causal(),
            {"is_causal", "query_seq_lengths", "key_value_seq_lengths"},
        ),
        (masks.sliding_window(2, 1), None),  # cuDNN takes a right window only with causal
        (masks.causal(2), None),
        (masks.chunked(3), None),
        (masks.from_array(np.ones((B, 1, 1, S), bool)), None),
    ],
)
def test_jax_nn_native_arguments_come_from_mask_factors(mask, native):
    got = jax_nn._native(mask, (B, N, T, S))
    assert (got is None) if native is None else set(got[0]) == native
