"""The Pallas kernel as a GPU compiles it (Triton), not as the interpreter runs it.

On any machine: the kernel lowers to Triton for a Hopper GPU (an abstract device, so no GPU is
needed), forward and backward, which catches operations Triton refuses (batched dots, gathers,
arrays whose size is not a power of 2), and pallas_attention refuses, before compiling, the
configurations Triton cannot compile correctly (on an H200, 4-wide tiles with head dim 8
compiled and returned about twice the right values). On a GPU (marked ``gpu``): values, lse and
gradients against attend's dense composition on the same GPU, at GPU-sized tiles (64) with
ragged lengths, in float32 (all matmuls at full precision) and bfloat16. test_chunked.py checks
every mask and weighting on the interpreter; this file the subset that the compiled kernel
supports.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attn
from attn import masks, positional
from attn.kernels import dispatch, pallas

HOPPER = jax.sharding.AbstractDevice(device_kind="NVIDIA H200", num_cores=None, platform="gpu")


def on_gpu(test):
    """A test that runs the compiled kernel: marked ``gpu`` (``pytest -m gpu`` selects these),
    skipped without a GPU."""
    skip = pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a GPU")
    return pytest.mark.gpu(skip(test))


# Ragged lengths (padded to whole 64-tiles inside) with two query heads per key head.
B, T, S, N, K, H = 2, 200, 264, 4, 2, 64

MASKS = {
    "none": None,
    "causal": masks.causal(),
    "causal_bottom_right": masks.causal(S - T),
    "window": masks.sliding_window(48, 16),
    "chunked_causal": masks.chunked(64) & masks.causal(),
    "strided": masks.strided(3) & masks.causal(),
    "longformer": masks.global_tokens(2) | masks.sliding_window(32, 32),
    "negated": ~masks.causal(),
}


def _lower_for_hopper(fn, *shapes: jax.ShapeDtypeStruct) -> str:
    """``fn`` lowered for CUDA with the Pallas kernel compiled (not interpreted)."""
    mesh = jax.sharding.AbstractMesh((1,), ("x",), abstract_device=HOPPER)
    with jax.sharding.use_abstract_mesh(mesh):
        return jax.jit(fn).trace(*shapes).lower(lowering_platforms=("cuda",)).as_text()


@pytest.fixture
def compiled_pallas(monkeypatch):
    """attend's "pallas" without the interpreter, whatever the backend."""
    monkeypatch.setattr(
        dispatch, "pallas_attention", functools.partial(pallas.pallas_attention, interpret=False)
    )


def _attend_and_grads(implementation: str, *, lse: bool = True, **kwargs):
    """``q, k, v -> ((out, lse | None), (dq, dk, dv))`` under fixed random cotangents; ``lse``
    only for the softmax weightings, which have one."""

    def forward(q, k, v):
        result = attn.attend(q, k, v, implementation=implementation, return_lse=lse, **kwargs)
        return result if lse else (result, None)

    def loss(q, k, v):
        out, row_lse = forward(q, k, v)
        generator = np.random.default_rng(7)
        total = jnp.sum(out.astype(jnp.float32) * generator.standard_normal(out.shape))
        if row_lse is not None:
            d_lse = generator.standard_normal(row_lse.shape)
            # Rows that see no key have lse -inf and no gradient.
            total += jnp.sum(jnp.where(jnp.isfinite(row_lse), row_lse * d_lse, 0.0))
        return total

    def both(q, k, v):
        return forward(q, k, v), jax.grad(loss, argnums=(0, 1, 2))(q, k, v)

    return both


@pytest.mark.usefixtures("compiled_pallas")
@pytest.mark.parametrize("name", ["none", "causal", "window", "longformer"])
def test_forward_and_backward_lower_to_triton(name):
    spec = [jax.ShapeDtypeStruct(shape, jnp.bfloat16) for shape in [(B, T, N, H), (B, S, K, H)]]
    text = _lower_for_hopper(_attend_and_grads("pallas", mask=MASKS[name]), spec[0], *spec[1:] * 2)
    # The forward kernel (traced for the output and again for the gradients); the backward
    # pass is the chunked kernel's XLA code.
    assert "__gpu$xla.gpu.triton" in text


READS_ARRAYS = {
    "padding": {"mask": masks.padding(kv_lengths=np.array([100, 200]))},
    "segments": {"mask": masks.segments(np.zeros((B, T), np.int32))},
    "alibi": {"bias": positional.alibi_rule(N)},
}


@pytest.mark.usefixtures("compiled_pallas")
@pytest.mark.parametrize("name", sorted(READS_ARRAYS))
def test_rules_that_gather_from_arrays_are_refused(name):
    """A known limit: these rules read their arrays (lengths, ids, slopes) at per-entry
    indices, a gather, which Pallas' Triton lowering lacks; refused before lowering. The
    interpreter runs them (test_chunked.py)."""
    spec = jax.ShapeDtypeStruct((B, T, N, H), jnp.bfloat16)
    call = functools.partial(attn.attend, implementation="pallas", **READS_ARRAYS[name])
    with pytest.raises(ValueError, match="gather, which Pallas' Triton lowering lacks"):
        _lower_for_hopper(call, spec, spec, spec)


def _shapes(t: int, n: int, k: int, h: int) -> list[jax.ShapeDtypeStruct]:
    """q, k, v shapes with ``t`` queries and keys, ``n`` query and ``k`` key heads of dim ``h``."""
    return [jax.ShapeDtypeStruct((B, t, heads, h), jnp.bfloat16) for heads in (n, k, k)]


# (tile, T, N, K, H, what the error names): tiles are clipped to the lengths, so a short
# sequence gives a small tile. The first is test_chunked.py's configuration, which an H200
# compiled without an error and ran to wrong values.
REFUSED = {
    "tiles_4_head_dim_8": (4, 11, 4, 2, 8, "key tile 4 .*; head dim 8 must be"),
    "head_dim_8": (64, 128, 4, 2, 8, "head dim 8 must be a power of 2 and >= 16"),
    "head_dim_96": (64, 128, 4, 2, 96, "head dim 96 must be a power of 2"),
    "tile_48": (48, 96, 4, 2, 64, "query tile 48 .* must be a power of 2"),
    "short_sequence": (64, 40, 4, 2, 64, "query tile 40 \\(tiles are clipped to T and S\\)"),
    "three_heads_per_key_head": (64, 128, 6, 2, 64, "3 query heads per key head"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_what_triton_cannot_compile_correctly_is_refused(name):
    tile, t, n, k, h, message = REFUSED[name]
    call = functools.partial(pallas.pallas_attention, q_tile=tile, kv_tile=tile, interpret=False)
    with pytest.raises(ValueError, match=f"cannot compile this call for a GPU.*{message}"):
        _lower_for_hopper(call, *_shapes(t, n, k, h))
    # The interpreter takes the same call.
    interpreted = functools.partial(call, interpret=True)
    jax.jit(interpreted).trace(*_shapes(t, n, k, h))


def test_array_masks_whose_size_is_not_a_power_of_2_are_refused():
    mask = np.tril(np.ones((1, 1, 100, 100), bool))
    call = functools.partial(pallas.pallas_attention, mask=mask, interpret=False)
    with pytest.raises(ValueError, match=r"array of shape \(1, 1, 100, 100\)"):
        _lower_for_hopper(call, *_shapes(100, N, K, H))


def test_gpu_sized_calls_are_not_refused():
    """attend's Pallas tiles (64) with head dims 64 and 128 (the sizes the H200 ran), and a
    rule reading a scalar array (no gather), lower as before."""
    for h in (64, 128):
        call = functools.partial(pallas.pallas_attention, q_tile=64, kv_tile=64, interpret=False)
        assert "__gpu$xla.gpu.triton" in _lower_for_hopper(call, *_shapes(256, N, K, h))
    offset = functools.partial(call, mask=masks.causal(np.int32(3)))
    assert "__gpu$xla.gpu.triton" in _lower_for_hopper(offset, *_shapes(256, N, K, H))


def _inputs(dtype, num_kv_heads: int = K):
    generator = np.random.default_rng(0)
    shapes = [(B, T, N, H), (B, S, num_kv_heads, H), (B, S, num_kv_heads, H)]
    return [jnp.asarray(generator.standard_normal(shape), dtype) for shape in shapes]


def _assert_matches_dense(
    dtype, atol: float, num_kv_heads: int = K, *, lse: bool = True, **kwargs
) -> None:
    """Pallas on ``dtype`` inputs equals dense on the same values in float32."""
    q, k, v = _inputs(dtype, num_kv_heads)
    # Full-precision matmuls in dense and in the (XLA) backward pass: TF32 would hide errors.
    with jax.default_matmul_precision("highest"):
        got = jax.jit(_attend_and_grads("pallas", lse=lse, **kwargs))(q, k, v)
        upcast = [x.astype(jnp.float32) for x in (q, k, v)]
        want = jax.jit(_attend_and_grads("dense", lse=lse, **kwargs))(*upcast)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        finite = np.isfinite(b)
        np.testing.assert_array_equal(np.isfinite(a), finite)
        np.testing.assert_allclose(a[finite], b[finite], atol=atol, rtol=atol)


@on_gpu
@pytest.mark.parametrize("name", sorted(MASKS))
def test_float32_masks(name):
    _assert_matches_dense(jnp.float32, 1e-4, mask=MASKS[name])


@on_gpu
@pytest.mark.parametrize("name", ["none", "causal"])
def test_bfloat16(name):
    # bfloat16 inputs, float32 tiles and accumulation; the output is rounded to bfloat16.
    _assert_matches_dense(jnp.bfloat16, 5e-2, mask=MASKS[name])


@on_gpu
@pytest.mark.parametrize("num_kv_heads", [N, 1])
def test_multi_head_and_multi_query(num_kv_heads):
    _assert_matches_dense(jnp.float32, 1e-4, num_kv_heads, mask=masks.causal())


@on_gpu
@pytest.mark.parametrize(
    "kwargs",
    [
        {"weighting": "softmax_with_sink(sink_logit=0.5)"},
        {"weighting": "sigmoid", "lse": False},
        {"weighting": "relu", "lse": False},
        {"weighting": "softmax(temperature=2.0)", "logits_soft_cap": 5.0},
        {"bias": np.random.default_rng(1).standard_normal((B, N, T, S)).astype(np.float32)},
    ],
    ids=["sink", "sigmoid", "relu", "temperature_soft_cap", "bias_array"],
)
def test_weightings_and_bias(kwargs):
    _assert_matches_dense(jnp.float32, 1e-4, mask=masks.causal(), **kwargs)
