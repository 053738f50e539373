"""Reinforcement learning: jumanji/gymnax environments, attention policies and PPO in pure JAX.

Imported only by RL experiments (``attn run`` on a config with an ``env`` section); the
environment libraries load only when an environment is made.
"""

from attn.rl.config import base_config, episodes_config, validate
from attn.rl.envs import ENVIRONMENTS, Environment, make_env
from attn.rl.loop import RLExperiment, train_and_evaluate
from attn.rl.policies import POLICIES, EntityPointerPolicy, MLPPolicy, build_policy
from attn.rl.ppo import PPO, PPOOptions, gae, greedy_rollout

__all__ = [
    "ENVIRONMENTS",
    "POLICIES",
    "PPO",
    "EntityPointerPolicy",
    "Environment",
    "MLPPolicy",
    "PPOOptions",
    "RLExperiment",
    "base_config",
    "build_policy",
    "episodes_config",
    "gae",
    "greedy_rollout",
    "make_env",
    "train_and_evaluate",
    "validate",
]
