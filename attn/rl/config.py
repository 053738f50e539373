"""Reinforcement-learning configs: the sections, their defaults and the checks of a whole config.

An RL config has the sections ``env`` (:class:`EnvOptions`), ``model`` (a policy's options,
:mod:`attn.rl.policies`), ``optim`` (the supervised loop's :class:`OptimOptions`), ``train``
(:class:`RLTrainOptions`; ``num_steps`` counts PPO updates) and ``ppo`` (:class:`PPOOptions`).
The ``env`` section is what tells ``attn run`` (and ``attn sweep``) that a config is an RL
one. :func:`validate` makes the environment and traces the policy and the
optimizer as shapes only, so a bad config fails in seconds with the key named.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections
import optax
from flax import nnx

from attn.models.options import as_config_dict, option, parse_options
from attn.rl import policies
from attn.rl.envs import ENVIRONMENTS, Environment, make_env
from attn.rl.ppo import PPOOptions
from attn.train import config as config_lib
from attn.train.config import OptimOptions, _trace_optimizer
from attn.train.optim import build_optimizer

__all__ = [
    "SECTIONS",
    "EnvOptions",
    "RLChecked",
    "RLTrainOptions",
    "base_config",
    "episodes_config",
    "shorten_for_smoke",
    "validate",
]

SECTIONS = ("env", "model", "optim", "train", "ppo")
RL_METRICS = ("return", "gap")  # what evaluations report (gap: environments with a reference)


@dataclasses.dataclass(frozen=True)
class EnvOptions:
    """``env``: the environment (``"library:Name"``), ``kwargs`` for its ``make``, how many
    run side by side in training, and the evaluation's fixed instances (``eval_episodes``
    drawn from ``eval_seed``, the same for every evaluation and every run)."""

    name: str = option("gymnax:CartPole-v1", choices=ENVIRONMENTS)
    kwargs: dict = option({})
    num_envs: int = option(64, minimum=1)
    eval_episodes: int = option(128, minimum=1)
    eval_seed: int = option(12345, minimum=0)


@dataclasses.dataclass(frozen=True)
class RLTrainOptions:
    """``train``: the run length in PPO updates, logging, checkpoints and evaluation."""

    num_steps: int = option(100, minimum=1)
    log_every: int = option(10, minimum=0)  # 0: only at the end
    eval_every: int = option(50, minimum=0)
    checkpoint_every: int = option(50, minimum=0)
    max_to_keep: int = option(3, minimum=1)
    seed: int = option(0, minimum=0)
    best_metric: str = option("return", choices=RL_METRICS)
    best_mode: str = option("max", choices=("max", "min"))
    plot_examples: int = option(1, minimum=0)


def base_config(env: str, model: str) -> ml_collections.ConfigDict:
    """Defaults an RL experiment starts from: environment ``env``, policy ``model``."""
    config = ml_collections.ConfigDict()
    config.env = as_config_dict(parse_options(EnvOptions, {"name": env}, "env"))
    config.model = policies.default_config(model)
    config.optim = as_config_dict(OptimOptions(kwargs={}, grad_clip_norm=0.5))
    config.train = as_config_dict(RLTrainOptions())
    config.ppo = as_config_dict(PPOOptions())
    return config


def episodes_config(env: str, *, num_steps: int) -> ml_collections.ConfigDict:
    """What the combinatorial (jumanji) experiments share: the ``entity_pointer`` policy
    trained by PPO on 256 fresh episodes per update (``ppo.mode="episodes"``, undiscounted),
    evaluated every 100 updates on 256 fixed instances and kept by the smallest gap."""
    config = base_config(env, "entity_pointer")
    config.env.update(num_envs=256, eval_episodes=256)
    config.ppo.update(mode="episodes", epochs=2, num_minibatches=4, gamma=1.0, gae_lambda=0.95)
    config.optim.update(name="adam", learning_rate=3e-4, grad_clip_norm=1.0)
    config.train.update(
        num_steps=num_steps,
        log_every=20,
        eval_every=100,
        checkpoint_every=100,
        best_metric="gap",
        best_mode="min",
    )
    return config


def shorten_for_smoke(config: ml_collections.ConfigDict, num_steps: int = 4) -> None:
    """An RL ``:smoke`` variant: 4 environments (and evaluation episodes), one epoch of two
    minibatches, and the supervised smoke loop's schedule (:func:`attn.train.config.
    shorten_for_smoke`). The experiment shrinks its model itself."""
    config.env.update(num_envs=4, eval_episodes=4)
    config.ppo.update(num_minibatches=2, epochs=1, rollout_length=8)
    config_lib.shorten_for_smoke(config, num_steps=num_steps)


@dataclasses.dataclass(frozen=True)
class RLChecked:
    """A validated RL config's parts, each built from one parse."""

    env_options: EnvOptions
    env: Environment
    policy: Any
    optim: OptimOptions
    train: RLTrainOptions
    ppo: PPOOptions
    optimizer: optax.GradientTransformation
    learning_rate: Any


def _trace_policy(options: Any, env: Environment) -> None:
    """Build the policy and run it on a stand-in batch of two observations, as shapes only."""
    _, obs_shapes = jax.eval_shape(env.reset, jax.random.PRNGKey(0))

    def forward(obs: dict[str, jax.Array]) -> Any:
        single = jax.tree.map(lambda x: x[0], obs)
        model = policies.build_policy(options, single, env.num_actions, rngs=nnx.Rngs(0))
        return model(obs)

    stand_in = jax.tree.map(lambda s: jax.ShapeDtypeStruct((2, *s.shape), s.dtype), obs_shapes)
    try:
        jax.eval_shape(forward, stand_in)
    except (ValueError, TypeError) as error:
        raise ValueError(f"model ({options.name}) on {env.name}: {error}") from None


def validate(config: ml_collections.ConfigDict) -> RLChecked:
    """Check every section before anything is compiled; ``ValueError`` naming the key of the
    first problem found."""
    missing = [section for section in SECTIONS if section not in config]
    extra = sorted(set(config.keys()) - set(SECTIONS))
    if missing or extra:
        raise ValueError(
            f"RL config sections must be {list(SECTIONS)}; missing {missing}, unknown {extra}"
        )
    env_options = parse_options(EnvOptions, config.env, "env")
    policy = policies.parse_policy(config.model)
    optim = parse_options(OptimOptions, config.optim, "optim")
    train = parse_options(RLTrainOptions, config.train, "train")
    ppo = parse_options(PPOOptions, config.ppo, "ppo")
    if ppo.mode == "steps":
        batch, what = env_options.num_envs * ppo.rollout_length, "env.num_envs * ppo.rollout_length"
    else:  # minibatches of whole episodes
        batch, what = env_options.num_envs, "env.num_envs (ppo.mode='episodes')"
    if batch % ppo.num_minibatches:
        raise ValueError(f"ppo.num_minibatches={ppo.num_minibatches} must divide {what} = {batch}")
    try:
        env = make_env(env_options.name, **env_options.kwargs)
    except TypeError as error:
        raise ValueError(f"env.kwargs: {error}") from None
    if train.best_metric == "gap" and env.reference is None:
        raise ValueError(f"train.best_metric='gap': {env.name} has no reference solver")
    # The schedule counts optimizer steps: every update takes epochs x minibatches of them.
    optimizer, learning_rate = build_optimizer(optim, train.num_steps * ppo.optimizer_steps)
    _trace_optimizer(optimizer)
    _trace_policy(policy, env)
    return RLChecked(env_options, env, policy, optim, train, ppo, optimizer, learning_rate)
