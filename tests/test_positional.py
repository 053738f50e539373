"""Tests for attn.positional against NumPy references written here and hand-computed values."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn import positional

# ----------------------------------------------------------------------------- references


def ref_sinusoidal(positions: np.ndarray, dim: int, base: float = 10000.0) -> np.ndarray:
    positions = np.asarray(positions, dtype=np.float64)
    out = np.zeros((*positions.shape, dim))
    for i in range(dim // 2):
        w = base ** (-2.0 * i / dim)
        out[..., i] = np.sin(positions * w)
        out[..., dim // 2 + i] = np.cos(positions * w)
    return out


def ref_rope(x, positions, base=10000.0, rotary_dim=None, interleaved=False) -> np.ndarray:
    """Explicit loop over feature pairs, float64."""
    x = np.asarray(x, dtype=np.float64)
    B, T, _, H = x.shape
    d = H if rotary_dim is None else rotary_dim
    pos = np.broadcast_to(np.asarray(positions, dtype=np.float64), (B, T))
    out = x.copy()
    for i in range(d // 2):
        a, b = (2 * i, 2 * i + 1) if interleaved else (i, i + d // 2)
        angle = pos[:, :, None] * base ** (-2.0 * i / d)  # [B, T, 1]
        c, s = np.cos(angle), np.sin(angle)
        out[..., a] = x[..., a] * c - x[..., b] * s
        out[..., b] = x[..., b] * c + x[..., a] * s
    return out


def ref_alibi_bias(slopes, q_len, kv_len, q_offset=0) -> np.ndarray:
    slopes = np.asarray(slopes, dtype=np.float64)
    out = np.zeros((1, len(slopes), q_len, kv_len))
    for h, m in enumerate(slopes):
        for i in range(q_len):
            for j in range(kv_len):
                out[0, h, i, j] = -m * abs(i + q_offset - j)
    return out


def ref_t5_bucket(rel: int, bidirectional=True, num_buckets=32, max_distance=128) -> int:
    """Scalar restatement of the T5 recipe, float32 log like the original."""
    bucket = 0
    if bidirectional:
        num_buckets //= 2
        if rel > 0:
            bucket += num_buckets
        n = abs(rel)
    else:
        n = max(-rel, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return bucket + n
    scaled = (
        np.log(np.float32(n) / np.float32(max_exact))
        / np.float32(math.log(max_distance / max_exact))
        * np.float32(num_buckets - max_exact)
    )
    return bucket + min(max_exact + int(scaled), num_buckets - 1)


def rng_normal(seed, shape, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# ----------------------------------------------------------------------------- sinusoidal


def test_sinusoidal_matches_reference_any_shape():
    positions = np.array([[0, 1, 7], [100, 2047, 5]])
    got = positional.sinusoidal(positions, 16)
    assert got.shape == (2, 3, 16) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, ref_sinusoidal(positions, 16), atol=2e-4)


def test_sinusoidal_int_length_is_arange():
    np.testing.assert_array_equal(
        positional.sinusoidal(9, 8, base=100.0), positional.sinusoidal(jnp.arange(9), 8, base=100.0)
    )
    np.testing.assert_allclose(
        positional.sinusoidal(9, 8, base=100.0), ref_sinusoidal(np.arange(9), 8, 100.0), atol=1e-5
    )


def test_sinusoidal_known_values():
    # Position 0: sin half zeros, cos half ones. dim=2: the only frequency is 1.
    np.testing.assert_array_equal(positional.sinusoidal(jnp.array(0), 6), [0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(
        positional.sinusoidal(jnp.array([3]), 2), [[math.sin(3), math.cos(3)]], rtol=1e-6
    )


@pytest.mark.parametrize("dim", [7, 1, 0, -4])
def test_sinusoidal_bad_dim(dim):
    with pytest.raises(ValueError, match="dim"):
        positional.sinusoidal(4, dim)


def test_sinusoidal_bad_types():
    with pytest.raises(TypeError, match="dim"):
        positional.sinusoidal(4, 8.0)
    with pytest.raises(TypeError, match="positions"):
        positional.sinusoidal(jnp.array([True, False]), 8)


# ----------------------------------------------------------------------------- rope


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("rotary_dim", [None, 4])
def test_rope_matches_reference(interleaved, rotary_dim):
    x = rng_normal(0, (2, 5, 3, 8))
    positions = np.array([[0, 1, 2, 3, 4], [10, 11, 12, 300, 7]])
    got = positional.rope(x, positions, rotary_dim=rotary_dim, interleaved=interleaved)
    assert got.shape == x.shape and got.dtype == x.dtype
    want = ref_rope(x, positions, rotary_dim=rotary_dim, interleaved=interleaved)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_rope_reference_is_not_trivial():
    # Guard against a reference and implementation that both do nothing.
    x = rng_normal(1, (1, 4, 1, 8))
    got = positional.rope(x, jnp.arange(4))
    assert np.abs(np.asarray(got) - x)[:, 1:].max() > 0.1
    np.testing.assert_allclose(got[:, 0], x[:, 0], atol=1e-6)  # position 0 is the identity


@pytest.mark.parametrize("interleaved", [False, True])
def test_rope_scores_depend_only_on_relative_position(interleaved):
    q = rng_normal(2, (1, 1, 2, 16))
    k = rng_normal(3, (1, 1, 2, 16))

    def score(m, n):
        rq = positional.rope(q, jnp.array([m]), interleaved=interleaved)
        rk = positional.rope(k, jnp.array([n]), interleaved=interleaved)
        return np.einsum("btnh,btnh->n", np.asarray(rq, np.float64), np.asarray(rk, np.float64))

    base_score = score(7, 3)
    for shift in [-3, 1, 20, 100]:
        np.testing.assert_allclose(score(7 + shift, 3 + shift), base_score, rtol=1e-4, atol=1e-4)
    # ...and does depend on the offset, so the check above can fail.
    assert np.abs(score(7, 4) - base_score).max() > 1e-2


def test_rope_preserves_norm():
    x = rng_normal(4, (2, 6, 3, 10))
    got = positional.rope(x, jnp.arange(6) * 37, rotary_dim=6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)


def test_rope_inverse_is_negative_positions():
    x = rng_normal(5, (2, 6, 3, 8))
    positions = jnp.array([[0, 5, 9, 13, 2, 1000], [3, 3, 3, 3, 3, 3]])
    back = positional.rope(positional.rope(x, positions), -positions)
    np.testing.assert_allclose(back, x, atol=1e-4)


@pytest.mark.parametrize("interleaved", [False, True])
def test_rope_partial_leaves_tail_untouched(interleaved):
    x = rng_normal(6, (2, 4, 3, 10))
    got = positional.rope(x, jnp.arange(1, 5), rotary_dim=4, interleaved=interleaved)
    np.testing.assert_array_equal(got[..., 4:], x[..., 4:])
    assert np.abs(np.asarray(got[..., :4]) - x[..., :4]).max() > 0.1
    # The rotated part uses rotary_dim (not H) in its frequencies.
    np.testing.assert_allclose(
        got[..., :4], positional.rope(x[..., :4], jnp.arange(1, 5), interleaved=interleaved)
    )


def test_rope_layouts_are_permutations_of_each_other():
    H = 12
    x = rng_normal(7, (2, 5, 2, H))
    positions = jnp.arange(5) * 3
    # Half layout pairs (i, i + H/2); sending interleaved feature 2i -> i and 2i+1 -> i + H/2
    # turns interleaved pairs into half-layout pairs.
    perm = np.concatenate([np.arange(0, H, 2), np.arange(1, H, 2)])
    half_of_permuted = positional.rope(x[..., perm], positions, interleaved=False)
    interleaved = positional.rope(x, positions, interleaved=True)
    np.testing.assert_allclose(half_of_permuted, interleaved[..., perm], atol=1e-6)
    # Different layouts give different results on the same input.
    assert np.abs(np.asarray(positional.rope(x, positions)) - np.asarray(interleaved)).max() > 0.1


def test_rope_per_example_positions():
    x = rng_normal(8, (3, 4, 2, 8))
    positions = jnp.array([[0, 1, 2, 3], [5, 6, 7, 8], [40, 41, 42, 43]])
    got = positional.rope(x, positions)
    for b in range(3):
        np.testing.assert_allclose(got[b : b + 1], positional.rope(x[b : b + 1], positions[b]))
    # [T] positions broadcast over the batch like [1, T].
    np.testing.assert_array_equal(
        positional.rope(x, positions[1]), positional.rope(x, positions[1:2])
    )


def test_rope_jit_with_traced_positions():
    x = rng_normal(9, (2, 3, 2, 8))
    positions = jnp.array([[4, 5, 6], [9, 10, 11]])
    fn = jax.jit(lambda x, p: positional.rope(x, p, rotary_dim=6, interleaved=True))
    np.testing.assert_allclose(
        fn(x, positions), positional.rope(x, positions, rotary_dim=6, interleaved=True), atol=1e-6
    )
    # Decoding-style: offset is a traced scalar.
    step = jax.jit(lambda x, offset: positional.rope(x, offset + jnp.arange(3)))
    np.testing.assert_allclose(step(x, jnp.int32(7)), ref_rope(x, np.arange(7, 10)), atol=1e-5)


def test_rope_bfloat16_keeps_dtype():
    x = rng_normal(10, (1, 8, 2, 16))
    positions = jnp.arange(8) + 4000
    got = positional.rope(jnp.asarray(x, jnp.bfloat16), positions)
    assert got.dtype == jnp.bfloat16
    want = ref_rope(np.asarray(jnp.asarray(x, jnp.bfloat16), np.float64), positions)
    # Only the final cast is in bfloat16 (angles in float32), so the error is bf16 rounding.
    np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=3e-2)


def test_rope_grad():
    x = rng_normal(11, (1, 3, 1, 4))
    g = jax.grad(lambda x: jnp.sum(positional.rope(x, jnp.arange(3)) ** 2))(jnp.asarray(x))
    np.testing.assert_allclose(g, 2 * x, rtol=1e-5)  # a rotation preserves |x|^2


def test_rope_errors():
    x = jnp.zeros((2, 5, 3, 8))
    with pytest.raises(ValueError, match=r"rank 4.*\(2, 5, 8\)"):
        positional.rope(jnp.zeros((2, 5, 8)), jnp.arange(5))
    with pytest.raises(ValueError, match=r"positions.*\(6,\)"):
        positional.rope(x, jnp.arange(6))
    with pytest.raises(ValueError, match=r"positions.*\(3, 5\)"):
        positional.rope(x, jnp.zeros((3, 5), jnp.int32))
    with pytest.raises(ValueError, match=r"positions.*\(2, 5, 1\)"):
        positional.rope(x, jnp.zeros((2, 5, 1), jnp.int32))
    with pytest.raises(ValueError, match="rotary_dim"):
        positional.rope(x, jnp.arange(5), rotary_dim=3)
    with pytest.raises(ValueError, match="rotary_dim"):
        positional.rope(x, jnp.arange(5), rotary_dim=10)
    with pytest.raises(ValueError, match="rotary_dim"):
        positional.rope(x, jnp.arange(5), rotary_dim=0)
    with pytest.raises(ValueError, match="even head dim"):
        positional.rope(jnp.zeros((2, 5, 3, 7)), jnp.arange(5))
    with pytest.raises(TypeError, match="x must be a floating"):
        positional.rope(jnp.zeros((2, 5, 3, 8), jnp.int32), jnp.arange(5))
    with pytest.raises(TypeError, match="positions"):
        positional.rope(x, jnp.ones(5, bool))
    with pytest.raises(ValueError, match="base"):
        positional.rope(x, jnp.arange(5), base=1.0)


def test_rope_odd_head_dim_with_partial_rotary():
    x = rng_normal(12, (1, 2, 1, 7))
    got = positional.rope(x, jnp.arange(2), rotary_dim=6)
    np.testing.assert_allclose(got, ref_rope(x, np.arange(2), rotary_dim=6), atol=1e-5)


# ----------------------------------------------------------------------------- alibi


def test_alibi_slopes_power_of_two():
    np.testing.assert_array_equal(
        positional.alibi_slopes(8), [1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32, 1 / 64, 1 / 128, 1 / 256]
    )
    np.testing.assert_array_equal(positional.alibi_slopes(1), [1 / 256])
    np.testing.assert_array_equal(positional.alibi_slopes(2), [1 / 16, 1 / 256])
    s16 = np.asarray(positional.alibi_slopes(16), np.float64)
    np.testing.assert_allclose(s16, 2.0 ** (-0.5 * np.arange(1, 17)), rtol=1e-7)
    assert positional.alibi_slopes(16).dtype == jnp.float32


def test_alibi_slopes_non_power_of_two():
    # n=6: slopes for 4 heads (2^-2, 2^-4, 2^-6, 2^-8), then every other slope for 8 heads
    # (2^-1, 2^-3, ...), first 2 of them.
    np.testing.assert_array_equal(
        positional.alibi_slopes(6), [1 / 4, 1 / 16, 1 / 64, 1 / 256, 1 / 2, 1 / 8]
    )
    # n=12: 8-head slopes 2^-1..2^-8, then 16-head slopes at exponents -0.5, -1.5, -2.5, -3.5.
    want12 = [2.0**-e for e in range(1, 9)] + [2.0**-e for e in (0.5, 1.5, 2.5, 3.5)]
    np.testing.assert_allclose(positional.alibi_slopes(12), want12, rtol=1e-7)
    # n=3: 2-head slopes (2^-4, 2^-8), then the first 4-head slope 2^-2.
    np.testing.assert_array_equal(positional.alibi_slopes(3), [1 / 16, 1 / 256, 1 / 4])


@pytest.mark.parametrize("bad", [0, -2])
def test_alibi_slopes_bad_num_heads(bad):
    with pytest.raises(ValueError, match="num_heads"):
        positional.alibi_slopes(bad)


def test_alibi_slopes_bad_type():
    for bad in (True, 4.0, "4"):
        with pytest.raises(TypeError, match="num_heads"):
            positional.alibi_slopes(bad)


@pytest.mark.parametrize(("q_len", "kv_len", "q_offset"), [(5, 5, 0), (3, 7, 4), (4, 2, 0)])
def test_alibi_bias_matches_reference(q_len, kv_len, q_offset):
    got = positional.alibi_bias(6, q_len, kv_len, q_offset=q_offset)
    assert got.shape == (1, 6, q_len, kv_len) and got.dtype == jnp.float32
    want = ref_alibi_bias(positional.alibi_slopes(6), q_len, kv_len, q_offset)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_alibi_bias_known_values_and_causal_equivalence():
    bias = np.asarray(positional.alibi_bias(jnp.array([0.5, 2.0]), 3, 3))
    np.testing.assert_array_equal(bias[0, 0], -0.5 * np.array([[0, 1, 2], [1, 0, 1], [2, 1, 0]]))
    np.testing.assert_array_equal(bias[0, 1], -2.0 * np.array([[0, 1, 2], [1, 0, 1], [2, 1, 0]]))
    # Under a causal mask (j <= i) it is the paper's -slope * (i - j).
    i, j = np.meshgrid(np.arange(3), np.arange(3), indexing="ij")
    causal = j <= i
    np.testing.assert_array_equal(bias[0, 1][causal], (-2.0 * (i - j))[causal])


def test_alibi_bias_traced_and_per_example_offsets():
    fn = jax.jit(lambda off: positional.alibi_bias(4, 1, 6, q_offset=off))
    np.testing.assert_allclose(
        fn(jnp.int32(5)), ref_alibi_bias(positional.alibi_slopes(4), 1, 6, 5), rtol=1e-6
    )
    per_example = positional.alibi_bias(4, 2, 6, q_offset=jnp.array([0, 3, 4]))
    assert per_example.shape == (3, 4, 2, 6)
    for b, off in enumerate([0, 3, 4]):
        np.testing.assert_array_equal(
            per_example[b : b + 1], positional.alibi_bias(4, 2, 6, q_offset=off)
        )


def test_alibi_bias_learned_slopes_grad():
    g = jax.grad(lambda s: positional.alibi_bias(s, 2, 3).sum())(jnp.array([1.0, 0.25]))
    # d/d slope of -slope * sum |i - j| over [[0,1,2],[1,0,1]] = -5.
    np.testing.assert_allclose(g, [-5.0, -5.0])


def test_alibi_bias_errors():
    with pytest.raises(ValueError, match=r"num_heads_or_slopes.*\(2, 3\)"):
        positional.alibi_bias(jnp.ones((2, 3)), 4, 4)
    with pytest.raises(ValueError, match="num_heads"):
        positional.alibi_bias(0, 4, 4)
    with pytest.raises(TypeError, match="num_heads_or_slopes"):
        positional.alibi_bias(2.0, 4, 4)
    with pytest.raises(ValueError, match="q_len"):
        positional.alibi_bias(2, 0, 4)
    with pytest.raises(ValueError, match=r"q_offset.*\(2, 2\)"):
        positional.alibi_bias(2, 4, 4, q_offset=jnp.zeros((2, 2), jnp.int32))
    with pytest.raises(TypeError, match="q_offset"):
        positional.alibi_bias(2, 4, 4, q_offset=1.5)


# ----------------------------------------------------------------------------- t5


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize(("num_buckets", "max_distance"), [(32, 128), (16, 64), (8, 20)])
def test_t5_bucket_matches_reference(bidirectional, num_buckets, max_distance):
    rel = np.arange(-300, 301)
    got = positional.t5_relative_position_bucket(
        rel, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance
    )
    assert got.dtype == jnp.int32 and got.shape == rel.shape
    want = [ref_t5_bucket(int(r), bidirectional, num_buckets, max_distance) for r in rel]
    np.testing.assert_array_equal(got, want)
    assert int(got.min()) == 0 and int(got.max()) == num_buckets - 1  # every bucket range is used


def test_t5_bucket_known_values_bidirectional():
    bucket = positional.t5_relative_position_bucket  # defaults: 32 buckets, max_distance 128
    # 16 buckets per direction; distances 0..7 exact; past (rel <= 0) low half, future high half.
    np.testing.assert_array_equal(bucket(jnp.array([0, -1, -7, 1, 7])), [0, 1, 7, 17, 23])
    # Log range: 8 + floor(8 * log(n / 8) / log(16)) = 8 + floor(2 * log2(n / 8)).
    past = bucket(-jnp.array([8, 11, 12, 16, 23, 32, 64, 127, 128, 10_000]))
    np.testing.assert_array_equal(past, [8, 8, 9, 10, 11, 12, 14, 15, 15, 15])
    future = bucket(jnp.array([8, 16, 128, 10_000]))
    np.testing.assert_array_equal(future, [24, 26, 31, 31])


def test_t5_bucket_properties():
    n = jnp.arange(0, 400)
    for bidirectional in (True, False):
        past = np.asarray(positional.t5_relative_position_bucket(-n, bidirectional=bidirectional))
        assert np.all(np.diff(past) >= 0)  # monotone in distance
        exact = 8 if bidirectional else 16
        np.testing.assert_array_equal(past[:exact], np.arange(exact))  # exact for small
        assert np.all(past[128:] == past[127])  # clipped at max_distance
        assert past[127] == (15 if bidirectional else 31)
    future = np.asarray(positional.t5_relative_position_bucket(n[1:]))
    assert np.all(future >= 16) and np.all(np.diff(future) >= 0)
    # Unidirectional: every future key shares bucket 0 with distance 0.
    np.testing.assert_array_equal(
        positional.t5_relative_position_bucket(n, bidirectional=False), np.zeros(400)
    )


def test_t5_bucket_errors():
    with pytest.raises(ValueError, match="num_buckets"):
        positional.t5_relative_position_bucket(jnp.arange(3), num_buckets=31)
    with pytest.raises(ValueError, match="num_buckets"):
        positional.t5_relative_position_bucket(jnp.arange(3), num_buckets=2)
    with pytest.raises(ValueError, match="max_distance"):
        positional.t5_relative_position_bucket(jnp.arange(3), num_buckets=32, max_distance=8)
    with pytest.raises(TypeError, match="relative_position"):
        positional.t5_relative_position_bucket(jnp.arange(3.0))


@pytest.mark.parametrize("bidirectional", [True, False])
def test_t5_relative_bias_matches_reference(bidirectional):
    table = rng_normal(13, (16, 3))
    q_len, kv_len, q_offset = 4, 40, 30
    got = positional.t5_relative_bias(
        table, q_len, kv_len, bidirectional=bidirectional, max_distance=32, q_offset=q_offset
    )
    assert got.shape == (1, 3, q_len, kv_len) and got.dtype == jnp.float32
    want = np.zeros((1, 3, q_len, kv_len), np.float32)
    for i in range(q_len):
        for j in range(kv_len):
            want[0, :, i, j] = table[ref_t5_bucket(j - (i + q_offset), bidirectional, 16, 32)]
    np.testing.assert_array_equal(got, want)


def test_t5_relative_bias_grad_counts_bucket_uses():
    table = jnp.zeros((8, 2))
    g = jax.grad(lambda t: positional.t5_relative_bias(t, 3, 3, max_distance=16).sum())(table)
    # 4 buckets per direction, 2 exact. Relative positions over a 3x3 grid:
    # 0 (x3) -> 0, -1 (x2) -> 1, -2 (x1) -> 2, +1 (x2) -> 5, +2 (x1) -> 6.
    counts = np.array([3, 2, 1, 0, 0, 2, 1, 0], np.float32)
    np.testing.assert_array_equal(g, np.stack([counts, counts], axis=1))


def test_t5_relative_bias_traced_and_per_example_offsets():
    table = jnp.asarray(rng_normal(14, (32, 2)), jnp.bfloat16)
    fn = jax.jit(lambda t, off: positional.t5_relative_bias(t, 1, 10, q_offset=off))
    decoded = fn(table, jnp.int32(9))
    assert decoded.dtype == jnp.bfloat16
    np.testing.assert_array_equal(decoded, positional.t5_relative_bias(table, 10, 10)[:, :, 9:])
    per_example = positional.t5_relative_bias(table, 1, 10, q_offset=jnp.array([2, 9]))
    assert per_example.shape == (2, 2, 1, 10)
    np.testing.assert_array_equal(
        per_example[0:1], positional.t5_relative_bias(table, 10, 10)[:, :, 2:3]
    )


def test_t5_relative_bias_errors():
    with pytest.raises(ValueError, match=r"table.*\(32,\)"):
        positional.t5_relative_bias(jnp.zeros(32), 4, 4)
    with pytest.raises(ValueError, match="num_buckets"):
        positional.t5_relative_bias(jnp.zeros((7, 2)), 4, 4)
    with pytest.raises(ValueError, match="kv_len"):
        positional.t5_relative_bias(jnp.zeros((32, 2)), 4, 0)
    with pytest.raises(TypeError, match="bidirectional"):
        positional.t5_relative_bias(jnp.zeros((32, 2)), 4, 4, bidirectional=1)
