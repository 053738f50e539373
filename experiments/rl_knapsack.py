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

from attn.rl.config import episodes_config, shorten_for_smoke
from attn.train.sweep import grid

ARGS = ("smoke",)


def get_config(arg: str | None = None):
    config = episodes_config("jumanji:Knapsack-v1", num_steps=300)
    config.model.update(num_layers=2, features=64, num_heads=4, mlp_features=128)
    config.ppo.entropy_coef = 0.01
    if arg == "smoke":
        config.model.update(num_layers=1, features=16, num_heads=2, mlp_features=16)
        shorten_for_smoke(config)
    return config


def sweep(arg: str | None = None):
    """Seeds: ``attn sweep experiments/rl_knapsack.py[:smoke] --workdir W``."""
    return grid(**{"train.seed": [0, 1] if arg == "smoke" else [0, 1, 2]})
