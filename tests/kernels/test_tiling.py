"""Tile plans: static skipping from mask summaries, the traced fallback, and memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attn
from attn import masks
from attn.kernels import chunked_attention, plan_tiles


def test_no_mask_visits_every_pair_without_evaluating_a_mask():
    plan, visit = plan_tiles(None, (1, 1, 64, 64), 16, 16)
    assert visit is None and plan.visited_fraction == 1.0
    assert len(plan.full) == 16 and not plan.partial


def test_short_last_key_tile_is_always_partial():
    plan, _ = plan_tiles(None, (1, 1, 64, 60), 16, 16)
    assert {j for _, j in plan.partial} == {3} and len(plan.partial) == 4


def test_causal_visits_the_lower_triangle_and_evaluates_only_the_diagonal():
    plan, _ = plan_tiles(masks.causal(), (1, 1, 128, 128), 16, 16)
    assert sorted(plan.partial) == [(i, i) for i in range(8)]
    assert all(j < i for i, j in plan.full)
    assert plan.visited_fraction == pytest.approx(36 / 64)


def test_sliding_window_work_grows_linearly():
    fractions = {}
    for length in (256, 1024):
        plan, _ = plan_tiles(masks.sliding_window(32), (1, 1, length, length), 32, 32)
        fractions[length] = len(plan.full) + len(plan.partial)
    assert fractions[1024] == pytest.approx(4 * fractions[256], rel=0.05)


def test_pairs_are_ordered_for_the_pass():
    plan, _ = plan_tiles(masks.causal(), (1, 1, 64, 64), 16, 16)
    by_query, by_key = plan.pairs("full"), plan.pairs("full", kv_major=True)
    assert (np.diff(by_query[:, 0]) >= 0).all() and (np.diff(by_key[:, 1]) >= 0).all()


def test_static_masks_give_a_static_plan_under_jit():
    """A mask built outside jit (concrete ids) and closed over stays static inside."""
    mask = masks.segments(np.repeat(np.arange(4), 16)[None])

    @jax.jit
    def plan_of(_):
        plan, visit = plan_tiles(mask, (1, 1, 64, 64), 16, 16)
        assert visit is None
        return plan.visited_fraction

    assert plan_of(0) == pytest.approx(4 / 16)


def test_traced_masks_plan_every_pair_with_a_traced_visit_flag():
    @jax.jit
    def visit_of(lengths):
        plan, visit = plan_tiles(masks.padding(kv_lengths=lengths), (2, 1, 32, 32), 8, 8)
        assert not plan.full and len(plan.partial) == 16
        return visit

    visit = np.asarray(visit_of(jnp.array([5, 17])))
    np.testing.assert_array_equal(visit, np.broadcast_to([True, True, True, False], (4, 4)))


def test_no_score_matrix_in_forward_or_backward():
    """Compiled temporary memory stays far below one [T, S] float32 array."""
    B, T, N, H = 1, 2048, 2, 16
    q = jax.ShapeDtypeStruct((B, T, N, H), jnp.float32)

    def loss(q, k, v):
        return chunked_attention(q, k, v, mask=masks.causal(), q_tile=128, kv_tile=128).sum()

    scores_bytes = B * N * T * T * 4
    for fn in (loss, jax.grad(loss, argnums=(0, 1, 2))):
        temp = jax.jit(fn).lower(q, q, q).compile().memory_analysis().temp_size_in_bytes
        assert temp < scores_bytes / 16, (fn, temp)


def test_tiles_larger_than_the_sequence_and_odd_lengths(quick_jit):
    generator = np.random.default_rng(0)
    q, k, v = (generator.standard_normal((1, n, 2, 4)).astype(np.float32) for n in (5, 7, 7))

    def all_tilings(q, k, v):
        mask = masks.causal(2)
        want = attn.attend(q, k, v, score="dot", mask=mask, implementation="dense")
        tilings = [(512, 256), (2, 3), (1, 1)]
        return want, [
            chunked_attention(q, k, v, mask=mask, q_tile=a, kv_tile=b) for a, b in tilings
        ]

    want, got = quick_jit(all_tilings)(q, k, v)
    for out in got:
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
