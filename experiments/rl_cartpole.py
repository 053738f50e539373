"""CartPole-v1 (gymnax) with PPO and an MLP policy: the sanity run of the RL loop.

64 environments vmapped, 64-step rollouts, 4 epochs of 4 minibatches per update, all in one
compiled program per update (PureJaxRL's settings, with more environments).

    attn run experiments/rl_cartpole.py --workdir workdirs/rl_cartpole        # full run
    attn run experiments/rl_cartpole.py:smoke --workdir /tmp/rl_cartpole      # seconds, for tests
    attn eval --workdir workdirs/rl_cartpole                                  # greedy return
    attn plot --workdir workdirs/rl_cartpole                                  # action probabilities

Expected: greedy return >= 475 (of 500) on the 32 evaluation episodes in under 2 minutes on 2
CPU cores (BUILD_NOTES.md has the measured figures).
"""

from attn.rl.config import base_config, shorten_for_smoke
from attn.train.sweep import grid

ARGS = ("smoke",)


def get_config(arg: str | None = None):
    config = base_config(env="gymnax:CartPole-v1", model="mlp")
    config.env.update(num_envs=64, eval_episodes=32)
    config.ppo.update(rollout_length=64, epochs=4, num_minibatches=4)
    config.optim.update(
        name="adam",
        learning_rate=2.5e-3,
        kwargs={"eps": 1e-5},
        schedule="linear_schedule",
        schedule_kwargs={"init_value": 1.0, "end_value": 0.0},
    )
    config.train.update(num_steps=300, log_every=10, eval_every=50, checkpoint_every=50)
    if arg == "smoke":
        config.model.update(features=8)
        shorten_for_smoke(config)
    return config


def sweep(arg: str | None = None):
    """Seeds: ``attn sweep experiments/rl_cartpole.py[:smoke] --workdir W``."""
    return grid(**{"train.seed": [0, 1] if arg == "smoke" else [0, 1, 2]})
