"""PPO's pieces: GAE against a NumPy reference, and the loss on states with no legal action."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from attn.rl import policies
from attn.rl.ppo import PPO, PPOOptions, gae


def gae_reference(rewards, values, dones, last_value, gamma, lam):
    """The textbook backward recursion, one environment and step at a time."""
    T, B = rewards.shape
    advantages = np.zeros((T, B))
    for b in range(B):
        running, next_value = 0.0, last_value[b]
        for t in reversed(range(T)):
            live = 1.0 - dones[t, b]
            delta = rewards[t, b] + gamma * next_value * live - values[t, b]
            running = delta + gamma * lam * live * running
            advantages[t, b] = running
            next_value = values[t, b]
    return advantages, advantages + values


def test_gae_matches_the_numpy_recursion():
    rng = np.random.default_rng(0)
    T, B = 7, 3
    rewards, values = rng.normal(size=(T, B)), rng.normal(size=(T, B))
    dones = rng.random((T, B)) < 0.3
    last_value = rng.normal(size=B)
    got = gae(*map(jnp.asarray, (rewards, values, dones, last_value)), 0.9, 0.8)
    want = gae_reference(rewards, values, dones.astype(float), last_value, 0.9, 0.8)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-5, atol=1e-5)


def test_the_ppo_losses_and_gradients_are_finite_when_every_action_is_masked():
    legal = np.ones((4, 5), bool)
    legal[0] = False  # a state with no legal action
    legal[1, :3] = False
    obs = {
        "entities": jnp.asarray(np.random.default_rng(1).random((4, 5, 2)), jnp.float32),
        "globals": jnp.ones((4, 1)),
        "action_mask": jnp.asarray(legal),
    }
    options = policies.parse_policy({"name": "entity_pointer", "num_layers": 1, "features": 8})
    model = policies.build_policy(options, jax.tree.map(lambda x: x[0], obs), 5, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    ppo = PPO(None, graphdef, rest, optax.adam(1e-3), PPOOptions(), num_envs=4)
    steps = {
        "action": jnp.array([0, 4, 2, 1]),
        "log_prob": jnp.full(4, -1.5),
        "value": jnp.zeros(4),
        "advantage": jnp.array([1.0, -1.0, 0.5, 2.0]),
        "target": jnp.ones(4),
    }
    # The same four states as steps, and as two episodes of two steps (the second one's last
    # step after its end).
    episodes = {name: x.reshape(2, 2) for name, x in steps.items()}
    episodes["obs"] = {k: v.reshape(2, 2, *v.shape[1:]) for k, v in obs.items() if k != "entities"}
    episodes["entities"] = obs["entities"][::2]
    episodes["live"] = jnp.array([[True, True], [True, False]])

    @jax.jit
    def losses(params):
        step_loss = jax.value_and_grad(ppo.loss, has_aux=True)(params, {**steps, "obs": obs})
        episode_loss = jax.value_and_grad(ppo.episode_loss, has_aux=True)(params, episodes)
        return step_loss, episode_loss

    for (loss, metrics), grads in losses(params):
        assert np.isfinite(float(loss)), metrics
        assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
        assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
