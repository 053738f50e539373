"""`attn plot`'s pictures of rollouts, drawn from made-up traces (no training needed)."""

import numpy as np
import pytest

from attn.rl.envs import Environment
from attn.rl.plots import plot_rollout


@pytest.mark.parametrize("draw", ["cities", "items", "flat"])
def test_rollouts_are_drawn_for_every_kind_of_environment(draw, tmp_path):
    steps, entities = 6, 5
    rng = np.random.default_rng(0)
    env = Environment(f"made-up:{draw}", entities, steps, reset=None, step=None, draw=draw)
    attention = rng.random((steps, entities))
    trace = (
        {"entities": rng.random((steps, entities, 2))},
        np.array([0, 3, 1, 4, 2, 0]),
        attention / attention.sum(-1, keepdims=True),
        np.array([True] * 5 + [False]),  # the episode ended after 5 steps
    )
    path = plot_rollout(env, trace, tmp_path / f"{draw}.png")
    assert path.stat().st_size > 1000
