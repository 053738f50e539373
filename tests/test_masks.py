"""Masks against NumPy rules; tile summaries against brute force; jit with traced arrays."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attn import masks

B, N, T, S = 2, 3, 11, 13
SHAPE = (B, N, T, S)
LENGTHS_Q = np.array([11, 4])
LENGTHS_KV = np.array([5, 13])
SEG_Q = np.array([[0] * 4 + [1] * 5 + [2] * 2, [0] * 11])
SEG_KV = np.array([[0] * 3 + [1] * 8 + [2] * 2, [0] * 6 + [1] * 7])


def grid():
    b, h, i, j = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    return b, h, i, j


def numpy_rule(name):
    """Plain NumPy statement of each mask's meaning, written independently of attn.masks."""
    b, _, i, j = grid()
    rules = {
        "causal": j <= i,
        "causal_offset": j <= i + 2,
        "causal_negative_offset": j <= i - 3,
        "window": (i - 3 <= j) & (j <= i),
        "window_both": (i - 2 <= j) & (j <= i + 1),
        "window_right_only": j <= i + 1,
        "chunked": i // 4 == j // 4,
        "strided": (np.abs(i - j) < 3) | ((i - j) % 3 == 0),
        "global": (i < 2) | (j < 2),
        "padding": (i < LENGTHS_Q[b]) & (j < LENGTHS_KV[b]),
        "padding_kv": j < LENGTHS_KV[b],
        "segments": SEG_Q[b, i] == SEG_KV[b, j],
        "prefix_lm": (j <= i) | (j < np.array([3, 6])[b]),
        "prefix_lm_int": (j <= i) | (j < 5),
        "example_causal": j <= i + np.array([0, 4])[b],
        "combined": ((j <= i) & ~(i // 4 == j // 4)) | (i < 2) | (j < 2),
    }
    return rules[name]


MASKS = {
    "causal": lambda: masks.causal(),
    "causal_offset": lambda: masks.causal(2),
    "causal_negative_offset": lambda: masks.causal(-3),
    "window": lambda: masks.sliding_window(3),
    "window_both": lambda: masks.sliding_window(2, 1),
    "window_right_only": lambda: masks.sliding_window(None, 1),
    "chunked": lambda: masks.chunked(4),
    "strided": lambda: masks.strided(3),
    "global": lambda: masks.global_tokens(2),
    "padding": lambda: masks.padding(LENGTHS_Q, LENGTHS_KV),
    "padding_kv": lambda: masks.padding(kv_lengths=jnp.asarray(LENGTHS_KV)),
    "segments": lambda: masks.segments(SEG_Q, SEG_KV),
    "prefix_lm": lambda: masks.prefix_lm(np.array([3, 6])),
    "prefix_lm_int": lambda: masks.prefix_lm(5),
    "example_causal": lambda: masks.causal(jnp.array([0, 4])),
    "combined": lambda: (masks.causal() & ~masks.chunked(4)) | masks.global_tokens(2),
}


@pytest.mark.parametrize("name", sorted(MASKS))
def test_dense_matches_numpy_rule(name):
    dense = np.asarray(MASKS[name]().dense(SHAPE))
    assert dense.ndim == 4 and dense.dtype == bool
    np.testing.assert_array_equal(np.broadcast_to(dense, SHAPE), numpy_rule(name))


def brute_force_summary(dense, q_tile, kv_tile):
    nq, nk = -(-T // q_tile), -(-S // kv_tile)
    any_visible = np.zeros((B, N, nq, nk), bool)
    all_visible = np.zeros((B, N, nq, nk), bool)
    for a in range(nq):
        for c in range(nk):
            block = dense[:, :, a * q_tile : (a + 1) * q_tile, c * kv_tile : (c + 1) * kv_tile]
            any_visible[:, :, a, c] = block.any(axis=(2, 3))
            all_visible[:, :, a, c] = block.all(axis=(2, 3))
    return any_visible, all_visible


# Interval rules are exact for these; combinations and segment ranges may be conservative.
EXACT = {"causal", "causal_offset", "causal_negative_offset", "window", "window_both", "chunked"}
EXACT |= {"window_right_only", "global", "padding", "padding_kv", "example_causal", "strided"}


@pytest.mark.parametrize("name", sorted(MASKS))
@pytest.mark.parametrize("tiles", [(1, 1), (4, 3), (5, 16), (11, 13)])
def test_tile_summary_is_sound(name, tiles):
    mask = MASKS[name]()
    dense = np.broadcast_to(np.asarray(mask.dense(SHAPE)), SHAPE)
    want_any, want_all = brute_force_summary(dense, *tiles)
    summary = mask.tile_summary(SHAPE, *tiles)
    got_any = np.broadcast_to(np.asarray(summary.any_visible), want_any.shape)
    got_all = np.broadcast_to(np.asarray(summary.all_visible), want_all.shape)
    # Sound: never call a tile with a visible entry fully masked, nor a partial tile full.
    assert not (want_any & ~got_any).any(), "a visible tile was reported fully masked"
    assert not (got_all & ~want_all).any(), "a partial tile was reported fully visible"
    if name in EXACT:
        np.testing.assert_array_equal(got_any, want_any)
        np.testing.assert_array_equal(got_all, want_all)


def test_static_masks_stay_on_host():
    """Static masks give NumPy constants, so kernels can decide tile skipping at trace time."""
    for mask in (masks.causal(), masks.sliding_window(4) & masks.padding(np.array([3, 9]))):
        assert isinstance(mask.dense(SHAPE), np.ndarray)
        assert isinstance(mask.tile_summary(SHAPE, 4, 4).any_visible, np.ndarray)


def test_combinators_follow_boolean_algebra():
    a, c = masks.causal(), masks.chunked(4)
    da, dc = (np.broadcast_to(m.dense(SHAPE), SHAPE) for m in (a, c))
    np.testing.assert_array_equal(np.broadcast_to((a & c).dense(SHAPE), SHAPE), da & dc)
    np.testing.assert_array_equal(np.broadcast_to((a | c).dense(SHAPE), SHAPE), da | dc)
    np.testing.assert_array_equal(np.broadcast_to((~a).dense(SHAPE), SHAPE), ~da)
    # Arrays combine with masks from either side.
    np.testing.assert_array_equal(np.broadcast_to((dc & a).dense(SHAPE), SHAPE), da & dc)


def test_random_blocks_is_seeded_and_has_the_asked_density():
    first = masks.random_blocks(16, 16, 4, 2, seed=3).dense((1, 1, 16, 16))
    again = masks.random_blocks(16, 16, 4, 2, seed=3).dense((1, 1, 16, 16))
    other = masks.random_blocks(16, 16, 4, 2, seed=4).dense((1, 1, 16, 16))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    # Every query row sees exactly 2 blocks of 4 keys.
    np.testing.assert_array_equal(np.asarray(first).sum(-1), 8)


def test_from_array_and_from_fn():
    array = np.random.default_rng(0).random((T, S)) > 0.5
    mask = masks.from_array(array)
    np.testing.assert_array_equal(np.broadcast_to(mask.dense(SHAPE), SHAPE)[1, 2], array)
    by_rule = mask.rule(np.array(1), np.array(0), np.arange(T)[:, None], np.arange(S)[None])
    np.testing.assert_array_equal(by_rule, array)
    odd = masks.from_fn(lambda b, h, i, j: (i + j) % 2 == 1)
    np.testing.assert_array_equal(
        odd.dense(SHAPE)[0, 0], (np.add.outer(range(T), range(S)) % 2) == 1
    )


def test_traced_masks_under_jit():
    """Lengths and segment ids may be traced, and a mask may be a jit argument (a pytree)."""

    @jax.jit
    def dense_from_lengths(q_lengths, kv_lengths):
        return masks.padding(q_lengths, kv_lengths).dense(SHAPE)

    got = dense_from_lengths(jnp.asarray(LENGTHS_Q), jnp.asarray(LENGTHS_KV))
    np.testing.assert_array_equal(np.broadcast_to(got, SHAPE), numpy_rule("padding"))

    @jax.jit
    def summary_of(mask):
        summary = mask.tile_summary(SHAPE, 4, 4)
        return summary.any_visible, mask.dense(SHAPE)

    mask = masks.segments(jnp.asarray(SEG_Q), jnp.asarray(SEG_KV)) & masks.causal()
    any_visible, dense = summary_of(mask)
    want_any, _ = brute_force_summary(np.broadcast_to(np.asarray(dense), SHAPE), 4, 4)
    assert not (want_any & ~np.broadcast_to(np.asarray(any_visible), want_any.shape)).any()


@settings(max_examples=30, deadline=None)
@given(
    left=st.integers(0, 12),
    right=st.integers(0, 12),
    q_tile=st.integers(1, 12),
    kv_tile=st.integers(1, 14),
)
def test_window_tile_summary_exact_for_any_tiling(left, right, q_tile, kv_tile):
    mask = masks.sliding_window(left, right)
    dense = np.broadcast_to(mask.dense(SHAPE), SHAPE)
    want_any, want_all = brute_force_summary(dense, q_tile, kv_tile)
    summary = mask.tile_summary(SHAPE, q_tile, kv_tile)
    np.testing.assert_array_equal(np.broadcast_to(summary.any_visible, want_any.shape), want_any)
    np.testing.assert_array_equal(np.broadcast_to(summary.all_visible, want_all.shape), want_all)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: masks.sliding_window(-1), ValueError, "left"),
        (lambda: masks.sliding_window(2, 1.5), ValueError, "right"),
        (lambda: masks.chunked(0), ValueError, "size"),
        (lambda: masks.strided(0), ValueError, "stride"),
        (lambda: masks.global_tokens(-2), ValueError, "num_global"),
        (lambda: masks.padding(), ValueError, "q_lengths"),
        (lambda: masks.padding(np.array([[1, 2]])), ValueError, "q_lengths"),
        (lambda: masks.padding(np.array([1.5])), ValueError, "q_lengths"),
        (lambda: masks.segments(np.zeros(4, int)), ValueError, "q_ids"),
        (lambda: masks.segments(np.zeros((2, 4), int), np.zeros((3, 4), int)), ValueError, "batch"),
        (lambda: masks.prefix_lm(np.array([1.0])), ValueError, "prefix_lengths"),
        (lambda: masks.random_blocks(8, 8, 4, 3), ValueError, "blocks_per_row"),
        (lambda: masks.from_array(np.zeros((2, 2))), TypeError, "boolean"),
        (lambda: masks.from_array(np.zeros((1, 1, 1, 2, 2), bool)), ValueError, "rank"),
        (lambda: masks.as_array(np.zeros((3, 5), bool), SHAPE), ValueError, "broadcast"),
        (lambda: masks.causal().dense((2, 3)), ValueError, "(B, N, T, S)"),
        (lambda: masks.causal().tile_summary(SHAPE, 0, 4), ValueError, "tile"),
        (lambda: masks.from_fn(3), TypeError, "callable"),
    ],
)
def test_bad_input_raises_a_clear_error(make, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()
