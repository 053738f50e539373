"""Masks against NumPy rules; tile summaries against brute force; jit with traced arrays."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import attn
from attn import masks
from attn.kernels import dispatch, rules

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


# --------------------------------------------------------------------------- static vs traced


def random_blocks_reference(q_len, kv_len, block_size, blocks_per_row, seed, shape):
    """BigBird random blocks in plain NumPy: the same generator draws, positions past the drawn
    lengths reuse the last block."""
    nq, nk = -(-q_len // block_size), -(-kv_len // block_size)
    generator = np.random.default_rng(seed)
    keep = np.zeros((nq, nk), bool)
    for row in range(nq):
        keep[row, generator.choice(nk, size=blocks_per_row, replace=False)] = True
    q_block = np.minimum(np.arange(shape[2]) // block_size, nq - 1)
    kv_block = np.minimum(np.arange(shape[3]) // block_size, nk - 1)
    return np.broadcast_to(keep[q_block[:, None], kv_block[None, :]], shape)


RANDOM_BLOCKS = [
    # (q_len, kv_len, block_size, blocks_per_row, seed, dense shape)
    (16, 16, 4, 2, 3, (1, 1, 16, 16)),
    (11, 13, 4, 2, 0, (2, 3, 11, 13)),
    (11, 13, 4, 1, 7, (1, 2, 15, 17)),  # shape beyond the drawn lengths
    (32, 20, 8, 3, 11, (1, 1, 32, 20)),
    (9, 9, 3, 0, 5, (1, 1, 9, 9)),
]


@pytest.mark.parametrize("case", RANDOM_BLOCKS)
def test_random_blocks_dense_keeps_its_seeded_pattern(case):
    *args, seed, shape = case
    dense = masks.random_blocks(*args, seed=seed).dense(shape)
    assert isinstance(dense, np.ndarray) and dense.dtype == bool
    np.testing.assert_array_equal(
        np.broadcast_to(dense, shape), random_blocks_reference(*args, seed, shape)
    )


@pytest.mark.parametrize("case", RANDOM_BLOCKS)
def test_random_blocks_rule_runs_on_traced_indices(case):
    """The chunked kernel evaluates the rule per tile instead of building the dense mask."""
    *args, seed, shape = case
    mask = masks.random_blocks(*args, seed=seed)
    assert rules.is_traceable(lambda m: m.rule, mask, shape)
    traced = jax.jit(lambda i, j: mask.rule(0, 0, i, j))
    q_idx, kv_idx = np.arange(shape[2])[:, None], np.arange(shape[3])[None]
    np.testing.assert_array_equal(
        traced(q_idx, kv_idx), random_blocks_reference(*args, seed, shape)[0, 0]
    )


def test_random_blocks_chunked_equals_dense(monkeypatch):
    monkeypatch.setattr(dispatch, "Q_TILE", 4)  # several tiles, some skipped
    monkeypatch.setattr(dispatch, "KV_TILE", 4)
    generator = np.random.default_rng(0)
    q = generator.standard_normal((B, T, N, 8)).astype(np.float32)
    k, v = (generator.standard_normal((B, S, 1, 8)).astype(np.float32) for _ in range(2))
    mask = masks.random_blocks(T, S, 4, 2, seed=3) | masks.causal()
    want = attn.attend(q, k, v, mask=mask, implementation="dense")
    got = attn.attend(q, k, v, mask=mask, implementation="chunked")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_random_blocks_as_jit_argument_stays_static():
    """The pattern is static metadata: a mask passed into jit still summarises on host, while the
    rule on traced indices reads the (traced) table leaf."""
    mask = masks.random_blocks(T, S, 4, 2, seed=2)
    found = {}

    @jax.jit
    def use(mask, i, j):
        found["summary"] = mask.tile_summary(SHAPE, 4, 4).any_visible
        return mask.rule(0, 0, i, j)

    got = use(mask, np.arange(T)[:, None], np.arange(S)[None])
    assert isinstance(found["summary"], np.ndarray)
    np.testing.assert_array_equal(got, random_blocks_reference(T, S, 4, 2, 2, SHAPE)[0, 0])


STATIC_MASKS = sorted(name for name in MASKS if name not in ("padding_kv", "example_causal"))
STATIC_MASKS_EXTRA = {
    "random_blocks": lambda: masks.random_blocks(T, S, 4, 2, seed=1),
    "from_fn": lambda: masks.from_fn(lambda b, h, i, j: (i + j) % 3 == 0),
    "from_array": lambda: masks.from_array(np.tri(T, S, dtype=bool)),
    "segments_lists": lambda: masks.segments(SEG_Q.tolist(), SEG_KV.tolist()),
}


@pytest.mark.parametrize("name", STATIC_MASKS + sorted(STATIC_MASKS_EXTRA))
def test_static_masks_summarise_on_host_under_jit(name):
    """Built inside ``jit`` from NumPy inputs, a mask still gives NumPy summaries and dense
    arrays: kernels decide tile skipping from them at trace time."""
    make = {**MASKS, **STATIC_MASKS_EXTRA}[name]
    found = {}

    @jax.jit
    def build(x):
        mask = make()
        found["summary"] = mask.tile_summary(SHAPE, 4, 3)
        found["dense"] = mask.dense(SHAPE)
        return x

    build(0)
    summary = found["summary"]
    assert isinstance(summary.any_visible, np.ndarray | np.generic)
    assert isinstance(summary.all_visible, np.ndarray | np.generic)
    assert isinstance(found["dense"], np.ndarray)
    dense = np.broadcast_to(found["dense"], SHAPE)
    want_any, want_all = brute_force_summary(dense, 4, 3)
    got_any = np.broadcast_to(summary.any_visible, want_any.shape)
    got_all = np.broadcast_to(summary.all_visible, want_all.shape)
    assert not (want_any & ~got_any).any() and not (got_all & ~want_all).any()


def test_segments_keep_numpy_ids_and_jax_ids():
    assert isinstance(masks.segments(SEG_Q, SEG_KV).q_ids, np.ndarray)
    assert isinstance(masks.segments(SEG_Q.tolist()).kv_ids, np.ndarray)
    assert isinstance(masks.segments(jnp.asarray(SEG_Q)).q_ids, jax.Array)


def test_segments_with_traced_ids_equal_dense(monkeypatch):
    monkeypatch.setattr(dispatch, "Q_TILE", 4)
    monkeypatch.setattr(dispatch, "KV_TILE", 4)
    generator = np.random.default_rng(1)
    q = generator.standard_normal((B, T, N, 8)).astype(np.float32)
    k, v = (generator.standard_normal((B, S, 1, 8)).astype(np.float32) for _ in range(2))

    @functools.partial(jax.jit, static_argnames="implementation")
    def run(q_ids, kv_ids, implementation):
        mask = masks.segments(q_ids, kv_ids)
        out = attn.attend(q, k, v, mask=mask, implementation=implementation)
        return out, mask.dense(SHAPE)

    ids = jnp.asarray(SEG_Q), jnp.asarray(SEG_KV)
    want, dense = run(*ids, "dense")
    got, _ = run(*ids, "chunked")
    np.testing.assert_array_equal(np.broadcast_to(dense, SHAPE), numpy_rule("segments"))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(MASKS))
def test_rules_run_on_traced_indices(name):
    """Every rule (NumPy or jax arrays inside) evaluates on traced indices, as in a kernel tile
    (a Pallas program traces the example index too)."""
    mask = MASKS[name]()
    b, h, i, j = (
        np.arange(n).reshape([-1 if a == d else 1 for d in range(4)]) for a, n in enumerate(SHAPE)
    )
    got = jax.jit(mask.rule)(b, h, i, j)
    np.testing.assert_array_equal(np.broadcast_to(got, SHAPE), numpy_rule(name))


# --------------------------------------------------------------------------- factors and checks

KEY_ARRAY = np.arange(S)[None, None, None, :] < np.array([7, 2])[:, None, None, None]  # [B,1,1,S]
FACTORED = {
    **MASKS,
    "causal_window_padding": lambda: (
        masks.causal() & masks.sliding_window(3, 2) & masks.padding(LENGTHS_Q, LENGTHS_KV)
    ),
    "two_paddings": lambda: masks.padding(kv_lengths=LENGTHS_KV) & masks.padding(LENGTHS_Q, 9),
    "key_array_and_segments": lambda: masks.from_array(KEY_ARRAY) & masks.segments(SEG_Q, SEG_KV),
    "padding_or_causal": lambda: masks.padding(kv_lengths=LENGTHS_KV) | masks.causal(),
}
# Masks whose factors are the whole mask: a window, lengths, and their `&`.
CLOSED_FORM = {
    "causal",
    "causal_offset",
    "causal_negative_offset",
    "window",
    "window_both",
    "window_right_only",
    "padding",
    "padding_kv",
    "causal_window_padding",
    "two_paddings",
}


def dense_from_factors(factors):
    """The mask that ``factors`` describe, in plain NumPy (Factors' documented meaning)."""
    b, _, i, j = grid()
    out = np.ones(SHAPE, bool)
    if factors.left is not None:
        out &= j >= i - factors.left
    if factors.right is not None:
        out &= j <= i + factors.right
    if factors.q_lengths is not None:
        out &= i < np.broadcast_to(np.asarray(factors.q_lengths), (B,))[b]
    if factors.kv_lengths is not None:
        out &= j < np.broadcast_to(np.asarray(factors.kv_lengths), (B,))[b]
    if factors.kv_valid is not None:
        out &= np.broadcast_to(np.asarray(factors.kv_valid), (B, S))[b, j]
    if factors.rest is not None:
        out &= np.broadcast_to(np.asarray(factors.rest.dense(SHAPE)), SHAPE)
    return out


@pytest.mark.parametrize("name", sorted(FACTORED))
def test_factors_describe_the_mask_exactly(name):
    mask = FACTORED[name]()
    factors = mask.factors()
    np.testing.assert_array_equal(
        dense_from_factors(factors), np.broadcast_to(mask.dense(SHAPE), SHAPE)
    )
    assert (factors.rest is None) == (name in CLOSED_FORM)


@pytest.mark.parametrize("name", sorted(CLOSED_FORM))
def test_factor_intervals_are_the_rows_of_closed_form_masks(name):
    """first/last visible key per query row, and empty rows, as in the dense mask."""
    dense = np.broadcast_to(MASKS.get(name, FACTORED[name])().dense(SHAPE), SHAPE)[:, 0]
    first, last = (np.asarray(a) for a in FACTORED[name]().factors().interval(SHAPE))
    seen = dense.any(-1)
    np.testing.assert_array_equal(first <= last, seen)
    np.testing.assert_array_equal(first[seen], dense.argmax(-1)[seen])
    np.testing.assert_array_equal(last[seen], S - 1 - dense[..., ::-1].argmax(-1)[seen])


def test_factor_queries_and_keys():
    factors = (masks.padding(LENGTHS_Q, LENGTHS_KV) & masks.from_array(KEY_ARRAY)).factors()
    np.testing.assert_array_equal(factors.queries(SHAPE), np.arange(T) < LENGTHS_Q[:, None])
    want_keys = (np.arange(S) < LENGTHS_KV[:, None]) & KEY_ARRAY[:, 0, 0, :]
    np.testing.assert_array_equal(factors.keys(SHAPE), want_keys)
    assert masks.causal().factors().keys(SHAPE) is None
    assert masks.causal().factors().queries(SHAPE) is None


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: masks.segments(np.zeros((B, 5), int)),
            r"segments: q_ids has shape \(2, 5\), expected \[B, T\] = \(2, 11\) for attention "
            r"of shape \[B, N, T, S\] = \(2, 3, 11, 13\)",
        ),
        (
            lambda: masks.causal() & masks.padding(kv_lengths=np.array([3, 4, 5])),
            r"padding: kv_lengths has shape \(3,\), expected a scalar or \[B\] = \(2,\)",
        ),
        (lambda: ~masks.padding(q_lengths=jnp.array([1])), r"padding: q_lengths has shape \(1,\)"),
        (lambda: masks.global_tokens(1) | masks.prefix_lm(np.ones(3, int)), "prefix_lm"),
        (lambda: masks.causal(jnp.array([1, 2, 3])), r"causal: offset has shape \(3,\)"),
        (lambda: masks.from_array(np.ones((3, 1, T, S), bool)), "does not broadcast"),
    ],
)
def test_check_names_the_mask_and_the_shapes(make, message):
    with pytest.raises(ValueError, match=message):
        make().check(SHAPE)


def test_one_causal_offset_array_serves_every_example():
    mask = masks.causal(jnp.asarray(2))
    mask.check(SHAPE)
    np.testing.assert_array_equal(
        np.broadcast_to(mask.dense(SHAPE), SHAPE), numpy_rule("causal_offset")
    )


@pytest.mark.parametrize("implementation", ["dense", "chunked", "pallas"])
@pytest.mark.parametrize(
    "mask",
    [masks.segments(np.zeros((B, 5), int)), masks.padding(kv_lengths=np.array([3, 4, 5]))],
    ids=["segments", "padding"],
)
def test_attend_checks_mask_arrays_for_every_implementation(mask, implementation):
    q = np.zeros((B, T, N, 4), np.float32)
    k = v = np.zeros((B, S, N, 4), np.float32)
    with pytest.raises(ValueError, match=r"has shape .* \[B, N, T, S\] = \(2, 3, 11, 13\)"):
        attn.attend(q, k, v, mask=mask, implementation=implementation)
