"""Environments from jumanji and gymnax behind one functional interface.

    env = make_env("jumanji:Knapsack-v1")            # or "gymnax:CartPole-v1", "jumanji:TSP-v1"
    state, obs = env.reset(rng)                      # one environment; vmap for many
    state, obs, reward, done = env.step(state, action)

``obs`` is a dict of arrays. Every environment's has ``action_mask [A]`` (bool, True = the
action is legal: jumanji's own mask, all True for gymnax). Set-structured (jumanji) ones also
have ``entities [E, F]`` (one row per item or city, the same at every step of an episode;
action ``a`` picks entity ``a``, so ``action_mask`` is also a key mask over entities) and,
where the task has them, ``globals [G]`` (the knapsack's remaining budget) and ``context [C]``
(indices of entities the next decision depends on: TSP's first and current city, -1 before
the first step). No array is empty: orbax does not save zero-size arrays, and observations
are part of the checkpointed state. Flat (gymnax) ones have ``features [F]``.
``step`` does not reset: the training loop resets
finished environments itself. The libraries are imported only when an environment is made, so
``import attn`` (and ``import attn.rl``) never imports them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from attn.rl import references

__all__ = ["ENVIRONMENTS", "Environment", "make_env"]

Array = jax.Array
Obs = dict[str, Array]


@dataclasses.dataclass(frozen=True)
class Environment:
    """One environment's pure functions and sizes (see the module docstring).

    ``reference(initial_states)``: the return of a reference solver on each instance (host
    NumPy, higher is better), or None where there is none. ``draw`` names how ``attn plot``
    draws its entities (``"cities"``, ``"items"`` or ``"flat"``).
    """

    name: str
    num_actions: int
    max_episode_steps: int
    reset: Callable[[Array], tuple[Any, Obs]]
    step: Callable[[Any, Array], tuple[Any, Obs, Array, Array]]
    reference: Callable[[Any], np.ndarray] | None = None
    draw: str = "flat"


def _jumanji_step(env: Any, to_obs: Callable[[Any, Any], Obs]) -> Callable:
    def step(state: Any, action: Array) -> tuple[Any, Obs, Array, Array]:
        state, timestep = env.step(state, action)
        return state, to_obs(state, timestep.observation), timestep.reward, timestep.last()

    return step


def _jumanji_reset(env: Any, to_obs: Callable[[Any, Any], Obs]) -> Callable:
    def reset(rng: Array) -> tuple[Any, Obs]:
        state, timestep = env.reset(rng)
        return state, to_obs(state, timestep.observation)

    return reset


def _knapsack_obs(state: Any, observation: Any) -> Obs:
    """Items ``[E, 2]``: weight, value; globals: the remaining budget. (What is packed or no
    longer fits is the action mask.)"""
    return {
        "entities": jnp.stack([observation.weights, observation.values], axis=-1),
        "globals": state.remaining_budget[None].astype(jnp.float32),
        "action_mask": observation.action_mask,
    }


def _tsp_obs(state: Any, observation: Any) -> Obs:
    """Cities ``[E, 2]``: x, y; context: the first and the current city (-1 before the first
    step). (The cities visited are the action mask.)"""
    return {
        "entities": observation.coordinates,
        "context": jnp.stack([observation.trajectory[0], observation.position]).astype(jnp.int32),
        "action_mask": observation.action_mask,
    }


def _knapsack_reference(states: Any) -> np.ndarray:
    return references.knapsack_optimum(
        np.asarray(states.weights), np.asarray(states.values), np.asarray(states.remaining_budget)
    )


def _tsp_reference(states: Any) -> np.ndarray:
    return -references.tsp_two_opt(np.asarray(states.coordinates))


def _jumanji(name: str, **kwargs: Any) -> Environment:
    import jumanji  # optional: imported only when asked for

    env = jumanji.make(name, **kwargs)
    kind = type(env).__name__
    if kind == "Knapsack":
        to_obs, reference, draw, steps = _knapsack_obs, _knapsack_reference, "items", None
    elif kind == "TSP":
        to_obs, reference, draw, steps = _tsp_obs, _tsp_reference, "cities", None
    else:
        raise ValueError(f"env.name: jumanji:{name} has no adapter (valid: {', '.join(JUMANJI)})")
    num_actions = int(env.action_spec.num_values)
    return Environment(
        name=f"jumanji:{name}",
        num_actions=num_actions,
        max_episode_steps=steps or num_actions,  # one entity per step at most
        reset=_jumanji_reset(env, to_obs),
        step=_jumanji_step(env, to_obs),
        reference=reference,
        draw=draw,
    )


def _gymnax(name: str, **kwargs: Any) -> Environment:
    import gymnax  # optional: imported only when asked for

    env, params = gymnax.make(name)
    # kwargs replace environment parameters (e.g. CartPole's max_steps_in_episode).
    unknown = sorted(set(kwargs) - set(dataclasses.asdict(params)))
    if unknown:
        raise ValueError(
            f"env.kwargs: {name} has no parameter {unknown[0]!r} "
            f"(valid: {', '.join(dataclasses.asdict(params))})"
        )
    params = params.replace(**kwargs)
    num_actions = int(env.num_actions)
    legal = jnp.ones((num_actions,), bool)

    def to_obs(observation: Array) -> Obs:
        return {"features": jnp.ravel(observation).astype(jnp.float32), "action_mask": legal}

    def reset(rng: Array) -> tuple[Any, Obs]:
        observation, state = env.reset_env(rng, params)
        return (state, rng), to_obs(observation)

    def step(carry: tuple[Any, Array], action: Array) -> tuple[Any, Obs, Array, Array]:
        # gymnax steps take a key (CartPole ignores it, MinAtar's sticky actions draw from it).
        state, rng = carry
        rng, step_rng = jax.random.split(rng)
        observation, state, reward, done, _ = env.step_env(step_rng, state, action, params)
        # gymnax 1.0 reports the time limit apart from termination; both end an episode here.
        done = done | env.is_truncated(state, params)
        return (state, rng), to_obs(observation), reward.astype(jnp.float32), done

    return Environment(
        name=f"gymnax:{name}",
        num_actions=num_actions,
        max_episode_steps=int(params.max_steps_in_episode),
        reset=reset,
        step=step,
    )


# Environments that download data when made are left out (jumanji's Sokoban, gymnax's
# MNISTBandit): runs must work offline.
JUMANJI = ("Knapsack-v1", "TSP-v1")
GYMNAX = (
    "CartPole-v1",
    "Acrobot-v1",
    "Breakout-MinAtar",
    "Asterix-MinAtar",
    "Freeway-MinAtar",
    "SpaceInvaders-MinAtar",
)
ENVIRONMENTS = tuple(f"jumanji:{n}" for n in JUMANJI) + tuple(f"gymnax:{n}" for n in GYMNAX)


def make_env(name: str, **kwargs: Any) -> Environment:
    """The environment ``"library:Name"`` (one of :data:`ENVIRONMENTS`); ``kwargs`` go to
    ``jumanji.make`` or replace gymnax's environment parameters."""
    if name not in ENVIRONMENTS:
        raise ValueError(
            f"env.name: unknown environment {name!r}; valid: {', '.join(ENVIRONMENTS)}"
        )
    library, _, env_name = name.partition(":")
    return {"jumanji": _jumanji, "gymnax": _gymnax}[library](env_name, **kwargs)
