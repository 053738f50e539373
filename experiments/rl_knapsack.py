"""Knapsack-v1 (jumanji: 50 items, budget 12.5) with PPO and an entity-attention policy.

A Transformer encoder over the items (weight, value), run once per episode, and a decoder that
at each step forms a context query (mean item encoding + remaining budget), glimpses the items
with ``attn.attend`` under the environment's ``action_mask`` (packed items and those that no
longer fit are masked) and scores each item with ``attn.scores.scaled_dot`` (Kool et al.'s
attention model). PPO plays 256 fresh instances per update (``ppo.mode="episodes"``).
Evaluation packs 256 fixed instances greedily and reports the gap to their exact optimum
(``scipy.optimize.milp``).

    attn run experiments/rl_knapsack.py --workdir workdirs/rl_knapsack        # full run
    attn run experiments/rl_knapsack.py:smoke --workdir /tmp/rl_knapsack      # seconds, for tests
    attn eval --workdir workdirs/rl_knapsack       # greedy return, reference, gap
    attn plot --workdir workdirs/rl_knapsack       # the items the policy attended to per step

References over the environment's reset distribution: random 13.40, value/weight greedy 20.11,
optimum 20.16. Target: greedy return within 1% of the optimum (>= 19.96) in <= 20 minutes on 2
CPU cores (BUILD_NOTES.md has the measured figures).
"""

from attn.rl.config import base_config
from attn.train.config import shorten_for_smoke
from attn.train.sweep import grid

ARGS = ("smoke",)


def get_config(arg: str | None = None):
    config = base_config(env="jumanji:Knapsack-v1", model="entity_pointer")
    config.env.update(num_envs=256, eval_episodes=256)
    config.model.update(num_layers=2, features=64, num_heads=4, mlp_features=128)
    config.ppo.update(
        mode="episodes",
        epochs=2,
        num_minibatches=4,
        gamma=1.0,
        gae_lambda=0.95,
        entropy_coef=0.01,
    )
    config.optim.update(name="adam", learning_rate=3e-4, grad_clip_norm=1.0)
    config.train.update(
        num_steps=300,
        log_every=20,
        eval_every=100,
        checkpoint_every=100,
        best_metric="gap",
        best_mode="min",
    )
    if arg == "smoke":
        config.env.update(num_envs=4, eval_episodes=4)
        config.model.update(num_layers=1, features=16, num_heads=2, mlp_features=16)
        config.ppo.update(num_minibatches=2, epochs=1)
        shorten_for_smoke(config, num_steps=4)
    return config


def sweep(arg: str | None = None):
    """Seeds: ``attn sweep experiments/rl_knapsack.py[:smoke] --workdir W``."""
    return grid(**{"train.seed": [0, 1] if arg == "smoke" else [0, 1, 2]})
