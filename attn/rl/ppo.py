"""Proximal policy optimisation in pure JAX: one jit-compiled function per update.

An update collects ``rollout_length`` steps of ``num_envs`` vmapped environments with
``lax.scan`` (finished environments reset inside the scan), computes GAE advantages, and takes
``epochs`` passes of ``num_minibatches`` clipped-objective gradient steps over the shuffled
batch: the design of PureJaxRL (Lu et al., 2022). The whole run state (parameters, optimizer,
environment states, observations, random key) is one pytree, so an update is a pure function
of it and a run resumed from a checkpoint repeats an uninterrupted one exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from attn.models.options import option
from attn.rl.envs import Environment

__all__ = ["PPO", "PPOOptions", "gae", "greedy_rollout", "select"]

Array = jax.Array
State = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class PPOOptions:
    """``ppo``: how an update collects experience, the clipped objective's settings and its
    epochs of minibatches.

    ``mode="steps"``: ``rollout_length`` steps of ``env.num_envs`` environments that carry on
    across updates (reset as they finish; the PureJaxRL design). ``mode="episodes"``: every
    update plays ``env.num_envs`` fresh episodes to their end (at most the environment's
    ``max_episode_steps``), and the policy encodes each episode's entities once, in the
    rollout and in every minibatch (the combinatorial tasks: a step costs only the decoder).
    """

    mode: str = option("steps", choices=("steps", "episodes"))
    rollout_length: int = option(32, minimum=1)
    epochs: int = option(4, minimum=1)
    num_minibatches: int = option(4, minimum=1)
    gamma: float = option(0.99, minimum=0.0)
    gae_lambda: float = option(0.95, minimum=0.0)
    clip_eps: float = option(0.2, above=0.0)
    value_coef: float = option(0.5, minimum=0.0)
    entropy_coef: float = option(0.01, minimum=0.0)
    normalize_advantages: bool = True

    @property
    def optimizer_steps(self) -> int:
        """Optimizer steps per update."""
        return self.epochs * self.num_minibatches


def gae(
    rewards: Array, values: Array, dones: Array, last_value: Array, gamma: float, lam: float
) -> tuple[Array, Array]:
    """Generalised advantage estimates and value targets, both ``[T, B]``.

    ``rewards, values, dones [T, B]``: step ``t``'s reward, the value of the state it acted in,
    and whether the episode ended with it (then nothing after it is bootstrapped);
    ``last_value [B]``: the value of the state after step ``T - 1``.
    """

    def backward(carry: tuple[Array, Array], step: tuple[Array, Array, Array]):
        advantage, next_value = carry
        reward, value, done = step
        live = 1.0 - done.astype(jnp.float32)
        delta = reward + gamma * next_value * live - value
        advantage = delta + gamma * lam * live * advantage
        return (advantage, value), advantage

    init = (jnp.zeros_like(last_value), last_value)
    _, advantages = jax.lax.scan(backward, init, (rewards, values, dones), reverse=True)
    return advantages, advantages + values


def select(done: Array, if_done: Any, otherwise: Any) -> Any:
    """Per environment (``done [B]``), the leaves of ``if_done`` or of ``otherwise``."""

    def pick(a: Array, b: Array) -> Array:
        return jnp.where(done.reshape(done.shape + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(pick, if_done, otherwise)


def greedy_rollout(
    env: Environment, policy: Callable, rng: Array, num_episodes: int, *, record: bool = False
) -> tuple[Array, Any, Any]:
    """Play ``num_episodes`` episodes from ``rng``'s instances with the greedy (argmax) policy.

    Returns each episode's return ``[num_episodes]``, the initial environment states and, with
    ``record``, per step ``[max_episode_steps, num_episodes, ...]``: the observation, the
    action, the policy's attention over entities (``policy.attention``) and whether the episode
    was still running.
    """
    states, obs = jax.vmap(env.reset)(jax.random.split(rng, num_episodes))
    encoded = policy.encode(obs)  # entities are the same at every step of an episode

    def step(carry, _):
        states, obs, total, running = carry
        logits, _ = policy.decode(encoded, obs)
        action = jnp.argmax(logits, axis=-1)
        trace = (obs, action, policy.attention(encoded, obs), running) if record else None
        states, obs, reward, done = jax.vmap(env.step)(states, action)
        total = total + jnp.where(running, reward, 0.0)
        return (states, obs, total, running & ~done), trace

    init = (states, obs, jnp.zeros(num_episodes), jnp.ones(num_episodes, bool))
    (_, _, total, _), trace = jax.lax.scan(step, init, length=env.max_episode_steps)
    return total, states, trace


class PPO:
    """The update and its parts for one environment, policy and optimizer.

    ``graphdef``/``rest``: the policy's structure and non-parameter state (``nnx.split``).
    """

    def __init__(
        self,
        env: Environment,
        graphdef: nnx.GraphDef,
        rest: nnx.State,
        tx: optax.GradientTransformation,
        options: PPOOptions,
        num_envs: int,
    ):
        self.env, self.graphdef, self.rest, self.tx = env, graphdef, rest, tx
        self.options, self.num_envs = options, num_envs

    def policy(self, params: Any) -> nnx.Module:
        return nnx.merge(self.graphdef, params, self.rest, copy=True)

    def init(self, params: Any, rng: Array) -> State:
        """The run state before the first update (``rng``: a raw ``uint32[2]`` key)."""
        if self.options.mode == "episodes":  # every update starts fresh episodes
            return {
                "params": params,
                "opt_state": self.tx.init(params),
                "rng": rng,
                "step": jnp.int32(0),
                "env_steps": jnp.int32(0),
            }
        rng, reset_rng = jax.random.split(rng)
        env_state, obs = jax.vmap(self.env.reset)(jax.random.split(reset_rng, self.num_envs))
        return {
            "params": params,
            "opt_state": self.tx.init(params),
            "env_state": env_state,
            "obs": obs,
            "episode_return": jnp.zeros(self.num_envs),  # of each environment's episode so far
            "rng": rng,
            "step": jnp.int32(0),
            "env_steps": jnp.int32(0),  # so far, for the logs
        }

    def rollout(self, state: State) -> tuple[State, dict[str, Array], Array]:
        """``rollout_length`` steps of every environment: the state after them, the
        transitions ``[T, B, ...]`` and the value of the last observation ``[B]``."""
        policy = self.policy(state["params"])
        env = self.env

        def step(carry, _):
            env_state, obs, running, rng = carry
            rng, action_rng, reset_rng = jax.random.split(rng, 3)
            logits, value = policy(obs)
            action = jax.random.categorical(action_rng, logits)
            log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], axis=-1)[
                :, 0
            ]
            next_state, next_obs, reward, done = jax.vmap(env.step)(env_state, action)
            fresh_state, fresh_obs = jax.vmap(env.reset)(jax.random.split(reset_rng, self.num_envs))
            running = running + reward
            transition = {
                "obs": obs,
                "action": action,
                "log_prob": log_prob,
                "value": value,
                "reward": reward,
                "done": done,
                "finished_return": jnp.where(done, running, 0.0),
            }
            carry = (
                select(done, fresh_state, next_state),
                select(done, fresh_obs, next_obs),
                jnp.where(done, 0.0, running),
                rng,
            )
            return carry, transition

        init = (state["env_state"], state["obs"], state["episode_return"], state["rng"])
        (env_state, obs, running, rng), transitions = jax.lax.scan(
            step, init, length=self.options.rollout_length
        )
        _, last_value = policy(obs)
        state = {**state, "env_state": env_state, "obs": obs, "episode_return": running, "rng": rng}
        return state, transitions, last_value

    def loss(self, params: Any, batch: dict[str, Array]) -> tuple[Array, dict[str, Array]]:
        """The loss of a minibatch of steps ``[M, ...]`` (``mode="steps"``)."""
        logits, value = self.policy(params)(batch["obs"])
        return self.objective(logits, value, batch, jnp.ones_like(value))

    def episode_loss(self, params: Any, batch: dict[str, Array]) -> tuple[Array, dict[str, Array]]:
        """The loss of a minibatch of whole episodes (``mode="episodes"``): ``entities
        [M, E, F]`` encoded once per episode, the other arrays ``[M, T, ...]``, steps after an
        episode's end weighted 0 (``live``)."""
        policy = self.policy(params)
        entities = batch["entities"]
        M, T = batch["action"].shape
        encoded = policy.encode({"entities": entities})

        def per_step(x: Any) -> Any:
            """``[M, ...]`` -> ``[M * T, ...]``, each episode's value repeated for its steps."""
            return jnp.broadcast_to(x[:, None], (M, T, *x.shape[1:])).reshape(M * T, *x.shape[1:])

        flat = jax.tree.map(lambda x: x.reshape(M * T, *x.shape[2:]), batch["obs"])
        logits, value = policy.decode(
            jax.tree.map(per_step, encoded), {**flat, "entities": per_step(entities)}
        )
        steps = {
            name: batch[name].reshape(M * T)
            for name in ("action", "log_prob", "value", "advantage", "target")
        }
        return self.objective(logits, value, steps, batch["live"].reshape(M * T))

    def objective(
        self, logits: Array, value: Array, batch: dict[str, Array], weights: Array
    ) -> tuple[Array, dict[str, Array]]:
        """The clipped surrogate + value loss - entropy bonus, as ``weights``-weighted means
        over the steps ``[M]`` (weights 0 or 1); logits ``[M, A]``, values ``[M]``."""
        o = self.options
        count = jnp.maximum(jnp.sum(weights), 1.0)

        def mean(x: Array) -> Array:
            return jnp.sum(x * weights) / count

        log_probs = jax.nn.log_softmax(logits)
        log_prob = jnp.take_along_axis(log_probs, batch["action"][:, None], axis=-1)[:, 0]
        advantage = batch["advantage"]
        if o.normalize_advantages:
            centred = advantage - mean(advantage)
            advantage = centred / (jnp.sqrt(mean(centred**2)) + 1e-8)
        ratio = jnp.exp(log_prob - batch["log_prob"])
        clipped_ratio = jnp.clip(ratio, 1.0 - o.clip_eps, 1.0 + o.clip_eps)
        policy_loss = -mean(jnp.minimum(ratio * advantage, clipped_ratio * advantage))
        old_value, target = batch["value"], batch["target"]
        clipped_value = old_value + jnp.clip(value - old_value, -o.clip_eps, o.clip_eps)
        value_loss = 0.5 * mean(jnp.maximum((value - target) ** 2, (clipped_value - target) ** 2))
        # Masked actions have probability exactly 0 and a finite log-probability: no NaN.
        entropy = mean(-jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1))
        loss = policy_loss + o.value_coef * value_loss - o.entropy_coef * entropy
        return loss, {
            "policy_loss": policy_loss,
            "value_loss": value_loss,
            "entropy": entropy,
            "approx_kl": mean((ratio - 1.0) - jnp.log(ratio)),
            "clip_fraction": mean(jnp.abs(ratio - 1.0) > o.clip_eps),
        }

    def learn(
        self, params: Any, opt_state: Any, batch: dict[str, Array], rng: Array, loss: Callable
    ) -> tuple[Any, Any, dict[str, Array]]:
        """``epochs`` passes of minibatch steps of ``loss`` over ``batch`` (``[N, ...]``: steps
        or episodes); returns the parameters, optimizer state and the mean of every
        minibatch's metrics."""
        o = self.options
        size = jax.tree.leaves(batch)[0].shape[0]

        def minibatch_step(carry, minibatch):
            params, opt_state = carry
            (value, metrics), grads = jax.value_and_grad(loss, has_aux=True)(params, minibatch)
            updates, new_opt_state = self.tx.update(grads, opt_state, params)
            new_params = optax.apply_updates(params, updates)
            metrics = {**metrics, "loss": value, "grad_norm": optax.tree.norm(grads)}
            # A non-finite step is not applied; the host reads `finite` and stops the run.
            finite = jnp.isfinite(value) & jnp.isfinite(metrics["grad_norm"])
            carry = select(finite, (new_params, new_opt_state), (params, opt_state))
            return carry, {**metrics, "finite": finite}

        def epoch(carry, epoch_rng):
            order = jax.random.permutation(epoch_rng, size)
            minibatches = jax.tree.map(
                lambda x: x[order].reshape(
                    o.num_minibatches, size // o.num_minibatches, *x.shape[1:]
                ),
                batch,
            )
            return jax.lax.scan(minibatch_step, carry, minibatches)

        (params, opt_state), metrics = jax.lax.scan(
            epoch, (params, opt_state), jax.random.split(rng, o.epochs)
        )
        finite = jnp.all(metrics.pop("finite"))
        metrics = jax.tree.map(jnp.mean, metrics)
        return params, opt_state, {**metrics, "finite": finite}

    def play(self, params: Any, rng: Array) -> tuple[dict[str, Array], dict[str, Array]]:
        """``num_envs`` fresh episodes to their end with the sampling policy: the transitions
        ``[T, B, ...]`` (``T = max_episode_steps``; ``live`` marks the steps before each
        episode's end, the others have reward and value 0) and the reset observations."""
        policy, env = self.policy(params), self.env
        reset_rng, step_rng = jax.random.split(rng)
        states, obs = jax.vmap(env.reset)(jax.random.split(reset_rng, self.num_envs))
        first_obs = obs
        encoded = policy.encode(obs)

        def step(carry, rng):
            states, obs, live = carry
            logits, value = policy.decode(encoded, obs)
            action = jax.random.categorical(rng, logits)
            log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], axis=-1)[
                :, 0
            ]
            states, next_obs, reward, done = jax.vmap(env.step)(states, action)
            transition = {
                "obs": {name: x for name, x in obs.items() if name != "entities"},
                "action": action,
                "log_prob": log_prob,
                "value": jnp.where(live, value, 0.0),
                "reward": jnp.where(live, reward, 0.0),
                "live": live,
            }
            return (states, next_obs, live & ~done), transition

        init = (states, obs, jnp.ones(self.num_envs, bool))
        _, transitions = jax.lax.scan(step, init, jax.random.split(step_rng, env.max_episode_steps))
        return transitions, first_obs

    def update(self, state: State) -> tuple[State, dict[str, Array]]:
        """One PPO update: experience (see :class:`PPOOptions`'s ``mode``), GAE, minibatch
        epochs. Returns the new state and metrics (means over the update;
        ``finished_return_sum``/``episodes`` over the episodes that ended in it)."""
        if self.options.mode == "episodes":
            return self.update_episodes(state)
        o = self.options
        state, transitions, last_value = self.rollout(state)
        advantages, targets = gae(
            transitions["reward"],
            transitions["value"],
            transitions["done"],
            last_value,
            o.gamma,
            o.gae_lambda,
        )
        batch = {name: transitions[name] for name in ("obs", "action", "log_prob", "value")} | {
            "advantage": advantages,
            "target": targets,
        }
        # Explicit sizes: some observation arrays are empty (no context), where -1 is ambiguous.
        batch = jax.tree.map(lambda x: x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]), batch)
        rng, learn_rng = jax.random.split(state["rng"])
        experience = {
            "finished_return_sum": jnp.sum(transitions["finished_return"]),
            "episodes": jnp.sum(transitions["done"]),
            "reward_mean": jnp.mean(transitions["reward"]),
            "env_steps": jnp.int32(transitions["reward"].size),
        }
        return self._learn_and_advance(state, batch, self.loss, rng, learn_rng, experience)

    def _learn_and_advance(
        self,
        state: State,
        batch: dict[str, Array],
        loss: Callable,
        rng: Array,
        learn_rng: Array,
        experience: dict[str, Array],
    ) -> tuple[State, dict[str, Array]]:
        """Learn from ``batch``; the next state (``rng`` its key) and the update's metrics
        (``experience``: what the rollout adds to them, its ``env_steps`` among them)."""
        params, opt_state, metrics = self.learn(
            state["params"], state["opt_state"], batch, learn_rng, loss
        )
        env_steps = state["env_steps"] + experience["env_steps"]
        state = {
            **state,
            "params": params,
            "opt_state": opt_state,
            "rng": rng,
            "step": state["step"] + 1,
            "env_steps": env_steps,
        }
        return state, {**metrics, **experience, "env_steps": env_steps}

    def update_episodes(self, state: State) -> tuple[State, dict[str, Array]]:
        """One update of ``mode="episodes"``."""
        o = self.options
        rng, play_rng, learn_rng = jax.random.split(state["rng"], 3)
        transitions, first_obs = self.play(state["params"], play_rng)
        live = transitions["live"]
        # An episode ends after its last live step; the steps after it add nothing.
        ended = ~jnp.concatenate([live[1:], jnp.zeros_like(live[:1])], axis=0)
        advantages, targets = gae(
            transitions["reward"],
            transitions["value"],
            ended,
            jnp.zeros(self.num_envs),
            o.gamma,
            o.gae_lambda,
        )
        by_episode = {**transitions, "advantage": advantages, "target": targets}
        batch = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), by_episode)  # [B, T, ...]
        batch["entities"] = first_obs["entities"]
        experience = {
            "finished_return_sum": jnp.sum(transitions["reward"]),
            "episodes": jnp.float32(self.num_envs),
            "reward_mean": jnp.sum(transitions["reward"]) / jnp.sum(live),
            "env_steps": jnp.sum(live, dtype=jnp.int32),
        }
        return self._learn_and_advance(state, batch, self.episode_loss, rng, learn_rng, experience)
