"""The jumanji/gymnax adapters, the reference solvers, and `import attn` without them."""

import subprocess
import sys

import jax
import numpy as np
import pytest

from attn.rl import references
from attn.rl.envs import make_env


def test_jumanji_observations_carry_the_environments_action_mask():
    env = make_env("jumanji:Knapsack-v1")
    state, obs = jax.jit(env.reset)(jax.random.PRNGKey(0))
    assert obs["entities"].shape == (50, 2) and obs["globals"].shape == (1,)
    assert env.num_actions == 50 and env.max_episode_steps == 50
    assert bool(obs["action_mask"].all())  # every item fits an empty knapsack of 12.5
    action = int(np.argmax(obs["entities"][:, 1]))
    state, obs, reward, done = jax.jit(env.step)(state, action)
    assert not obs["action_mask"][action] and not done
    np.testing.assert_allclose(float(reward), float(state.values[action]))
    tsp = make_env("jumanji:TSP-v1")
    _, obs = jax.jit(tsp.reset)(jax.random.PRNGKey(0))
    assert obs["entities"].shape == (20, 2) and obs["context"].tolist() == [-1, -1]


def test_gymnax_episodes_end_at_the_time_limit():
    env = make_env("gymnax:CartPole-v1", max_steps_in_episode=3)
    state, obs = jax.jit(env.reset)(jax.random.PRNGKey(0))
    assert obs["features"].shape == (4,) and obs["action_mask"].all()
    step = jax.jit(env.step)
    dones = []
    for action in (0, 1, 0):  # balanced enough not to fall in 3 steps
        state, obs, _, done = step(state, action)
        dones.append(bool(done))
    assert dones == [False, False, True]
    with pytest.raises(ValueError, match="no parameter 'max_steps'"):
        make_env("gymnax:CartPole-v1", max_steps=3)


def test_unknown_environments_list_the_valid_ones():
    with pytest.raises(ValueError, match="jumanji:Knapsack-v1"):
        make_env("jumanji:Sokoban-v0")


def test_references_beat_simple_heuristics():
    rng = np.random.default_rng(0)
    weights, values = rng.random((3, 12)), rng.random((3, 12))
    best = references.knapsack_optimum(weights, values, np.full(3, 3.0))
    for w, v, b in zip(weights, values, best, strict=True):  # value/weight greedy
        packed, room = 0.0, 3.0
        for i in np.argsort(-v / w):
            if w[i] <= room:
                packed, room = packed + v[i], room - w[i]
        assert packed <= b + 1e-9
    points = rng.random((2, 9, 2))
    identity = np.tile(np.arange(9), (2, 1))
    assert np.all(references.tsp_two_opt(points) <= references.tour_lengths(points, identity))


def test_import_attn_imports_no_environment_library():
    code = (
        "import sys, attn, attn.rl; print([m for m in ('jumanji', 'gymnax') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
