"""The pointer head: logits are scores masked by the action mask, and nothing is NaN when every
action is masked."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attn.rl import policies


def build(name: str, obs: dict, num_actions: int, **options):
    parsed = policies.parse_policy({"name": name, **options})
    single = jax.tree.map(lambda x: x[0], obs)
    return policies.build_policy(parsed, single, num_actions, rngs=nnx.Rngs(0))


def tsp_like_obs(legal: np.ndarray) -> dict:
    batch, entities = legal.shape
    rng = np.random.default_rng(0)
    return {
        "entities": jnp.asarray(rng.random((batch, entities, 2)), jnp.float32),
        "context": jnp.asarray(np.array([[-1, -1], [0, 3], [2, 2]])[:batch], jnp.int32),
        "action_mask": jnp.asarray(legal),
    }


@pytest.mark.parametrize("score", ["scaled_dot", "cosine"])
def test_pointer_logits_are_masked_scores_and_an_all_masked_state_gives_no_nan(score):
    legal = np.array([[True] * 6, [True, False, True, False, False, True], [False] * 6])
    obs = tsp_like_obs(legal)
    model = build(
        "entity_pointer", obs, 6, num_layers=1, features=8, num_heads=2, pointer_score=score
    )

    @nnx.jit
    def run(model):
        encoded = model.encode(obs)
        (logits, value), (raw, _) = model.decode(encoded, obs), model.pointer(encoded, obs)

        def objective(model):
            logits, value = model(obs)
            log_probs = jax.nn.log_softmax(logits)
            entropy = -jnp.sum(jnp.exp(log_probs) * log_probs)
            return entropy + jnp.sum(value) + log_probs[:, 0].sum()

        grads = nnx.grad(objective)(model)
        return logits, value, raw, model.attention(encoded, obs), grads

    logits, value, raw, attention, grads = jax.device_get(run(model))
    assert logits.shape == (3, 6) and value.shape == (3,)
    np.testing.assert_array_equal(logits[legal], raw[legal])
    assert np.all(logits[~legal] == policies.MASKED_LOGIT)
    assert np.all(np.abs(raw) <= 10.0)  # C * tanh(score), C = model.logit_clip
    np.testing.assert_array_equal(np.asarray(jax.nn.softmax(logits))[:2][~legal[:2]], 0.0)
    np.testing.assert_allclose(attention[:2].sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(attention[2], 0.0)  # attn's rule: a row that sees nothing
    for array in (logits, value, raw, *jax.tree.leaves(grads)):
        assert np.all(np.isfinite(array))


def test_mlp_policy_masks_illegal_actions():
    obs = {"features": jnp.ones((2, 4)), "action_mask": jnp.array([[True, False], [True, True]])}
    logits, value = build("mlp", obs, 2, features=8)(obs)
    assert logits[0, 1] == policies.MASKED_LOGIT and value.shape == (2,)


def test_bad_policy_options_name_the_key():
    with pytest.raises(ValueError, match=r"model\.pointer_score"):
        policies.parse_policy({"name": "entity_pointer", "pointer_score": "dott"})
    with pytest.raises(ValueError, match="unknown policy 'cnn'"):
        policies.parse_policy({"name": "cnn"})
    obs = tsp_like_obs(np.ones((1, 4), bool))
    with pytest.raises(ValueError, match="entities are a set"):
        build("entity_pointer", obs, 4, attention={"positional": "sinusoidal"})
