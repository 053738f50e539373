"""``train_and_evaluate`` for RL configs: the PPO loop beside the supervised one.

It shares the supervised loop's workdir conventions and helpers: the workdir lock and the
resume check, ``config.json``, ``metrics.jsonl`` and TensorBoard (:class:`MetricWriter`),
orbax checkpoints (``latest/`` and ``best/``), the tqdm bar, Ctrl-C handling and
``plots/curves.png``. One step of the loop is one PPO update (a single compiled program); the
checkpointed state holds the environments and the random key too, so a run killed at any
moment resumes to exactly the parameters of an uninterrupted one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from attn.rl import config as rl_config
from attn.rl import policies
from attn.rl.plots import plot_rollout
from attn.rl.ppo import PPO, greedy_rollout
from attn.train.checkpoints import Checkpoints
from attn.train.interrupt import stop_requests
from attn.train.loop import (
    EvalCallback,
    NonFiniteLossError,
    is_due,
    ocp_abstract,
    run_in_workdir,
    save_and_stop,
    stop_if_asked,
)
from attn.train.plots import plot_curves
from attn.train.writer import MetricWriter, read_metrics

__all__ = ["RLExperiment", "train_and_evaluate"]

CURVES = ("episode_return", "return", "gap", "loss", "entropy", "approx_kl")


class RLExperiment:
    """The parts of an RL run that training, ``attn eval`` and ``attn plot`` share."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        workdir: str | Path,
        *,
        read_only: bool = False,
        checked: rl_config.RLChecked | None = None,
    ):
        checked = checked or rl_config.validate(config)
        self.config, self.workdir, self.env = config, Path(workdir), checked.env
        self.checked = checked
        seed = checked.train.seed
        rng = jax.random.PRNGKey(seed)  # raw uint32 keys: orbax saves them as plain arrays
        _, obs_shapes = jax.eval_shape(self.env.reset, rng)
        policy = policies.build_policy(
            checked.policy, obs_shapes, self.env.num_actions, rngs=nnx.Rngs(seed)
        )
        graphdef, params, rest = nnx.split(policy, nnx.Param, ...)
        self.ppo = PPO(
            self.env, graphdef, rest, checked.optimizer, checked.ppo, checked.env_options.num_envs
        )
        self.state = jax.jit(self.ppo.init)(params, jax.random.fold_in(rng, 1))
        self.checkpoints = Checkpoints(
            self.workdir,
            max_to_keep=checked.train.max_to_keep,
            best_metric=checked.train.best_metric,
            best_mode=checked.train.best_mode,
            read_only=read_only,
        )
        self.update = jax.jit(self.ppo.update, donate_argnums=0)
        episodes = checked.env_options.eval_episodes
        # One program for evaluations and plots: the trace of every step is recorded (a few MB
        # for the full configs) and plots pick their episodes from it.
        self._rollout = jax.jit(
            lambda params, rng: greedy_rollout(
                self.env, self.ppo.policy(params), rng, episodes, record=True
            )
        )
        self._reference: np.ndarray | None = None
        self.started = time.perf_counter()  # eval records say how long the process has run

    def learning_rate(self, step: int) -> float:
        """The learning rate at the last optimizer step of update ``step``."""
        return self.checked.learning_rate(max(step * self.checked.ppo.optimizer_steps - 1, 0))

    def restore(self, which: str = "latest", *, missing_ok: bool = False) -> int:
        """Load the ``latest`` or ``best`` checkpoint into ``self.state``; returns its step
        (0 without one if ``missing_ok``, else ValueError)."""
        restored = self.checkpoints.restore(jax.tree.map(ocp_abstract, self.state), which=which)
        if restored is None:
            if missing_ok:
                return 0
            raise ValueError(f"no {which} checkpoint in {self.workdir / 'checkpoints' / which}")
        step, self.state = restored
        return step

    def _greedy(self, split: str) -> tuple[jax.Array, Any, Any]:
        """Greedy returns, initial states and trace of the evaluation instances."""
        if split != "test":
            raise ValueError(
                f"--split {split!r}: RL runs evaluate on 'test' only (env.eval_episodes "
                "instances drawn from env.eval_seed)"
            )
        rng = jax.random.PRNGKey(self.checked.env_options.eval_seed)
        return self._rollout(self.state["params"], rng)

    def evaluate(self, split: str = "test") -> dict[str, float]:
        """Mean greedy return over the fixed evaluation instances; where the environment has a
        reference solver also its mean return and ``gap`` (``(reference - policy) /
        |reference|``, 0 = as good as the reference; negative = better)."""
        returns, initial, _ = self._greedy(split)
        result = {"return": float(jnp.mean(returns))}
        if self.env.reference is not None:
            if self._reference is None:  # the same instances every time: solved once
                self._reference = self.env.reference(jax.device_get(initial))
            reference = float(np.mean(self._reference))
            result["reference_return"] = reference
            result["gap"] = (reference - result["return"]) / abs(reference)
        return result

    def plot(self, split: str = "test", tag: str = "", count: int | None = None) -> list[Path]:
        """Greedy rollouts of the first ``count`` (default ``train.plot_examples``) evaluation
        instances: per step, the policy's attention over the entities."""
        count = self.config.train.plot_examples if count is None else count
        count = min(count, self.checked.env_options.eval_episodes)
        trace = jax.device_get(self._greedy(split)[2])
        return [
            plot_rollout(
                self.env,
                jax.tree.map(lambda x, i=index: x[:, i], trace),
                self.workdir / "plots" / f"rollout_example{index}{tag}.png",
            )
            for index in range(count)
        ]

    def close(self) -> None:
        self.checkpoints.close()


class _Window:
    """Sums of the updates' metrics since the last log line (``env_steps`` is a running
    total: its last value is kept)."""

    def __init__(self, env_steps: int) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0
        self.started = time.perf_counter()
        self.env_steps_at_start = self.env_steps = env_steps

    def add(self, metrics: dict[str, Any]) -> None:
        self.env_steps = int(metrics.pop("env_steps"))
        for name, value in metrics.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value)
        self.count += 1

    def record(self, experiment: RLExperiment, step: int) -> dict[str, float]:
        seconds = time.perf_counter() - self.started
        sums, count = self.sums, max(self.count, 1)
        episodes = sums.pop("episodes", 0.0)
        finished = sums.pop("finished_return_sum", 0.0)
        record = {name: value / count for name, value in sums.items()}
        if episodes:
            record["episode_return"] = finished / episodes
        record["episodes"] = episodes
        record["env_steps"] = self.env_steps
        record["env_steps_per_second"] = (self.env_steps - self.env_steps_at_start) / seconds
        record["learning_rate"] = experiment.learning_rate(step)
        self.__init__(self.env_steps)
        return record


def _evaluate_and_log(experiment: RLExperiment, step: int, writer: MetricWriter) -> dict:
    evaluation = experiment.evaluate("test")
    evaluation["elapsed_seconds"] = time.perf_counter() - experiment.started
    writer.write(step, "eval", evaluation)
    train = experiment.config.train
    experiment.checkpoints.save_if_best(
        step, experiment.state, {train.best_metric: evaluation[train.best_metric]}
    )
    experiment.plot("test")
    plot_curves(
        read_metrics(experiment.workdir), experiment.workdir / "plots" / "curves.png", CURVES
    )
    tqdm.write(f"step {step}: eval " + ", ".join(f"{k} {v:.4f}" for k, v in evaluation.items()))
    return evaluation


def _train(experiment: RLExperiment, start: int, on_eval: EvalCallback | None) -> dict[str, Any]:
    train, workdir = experiment.config.train, experiment.workdir
    last, final = train.num_steps, {}
    writer = MetricWriter(workdir, resume_step=start)
    bar = tqdm(total=last, initial=start, desc=workdir.name, unit="update", dynamic_ncols=True)
    window = _Window(int(experiment.state["env_steps"]))
    try:
        with stop_requests() as stop:
            step = start
            while step < last and not stop.is_set():
                step += 1
                experiment.state, metrics = experiment.update(experiment.state)
                metrics = jax.device_get(metrics)
                if not metrics.pop("finite"):
                    raise NonFiniteLossError(
                        f"a non-finite loss or gradient at update {step} (not applied); the "
                        f"last good checkpoint is step {experiment.checkpoints.latest_step()}. "
                        "Lower optim.learning_rate or set optim.grad_clip_norm."
                    )
                window.add(metrics)
                bar.update(1)
                if is_due(step, train.log_every, last):
                    final["train"] = window.record(experiment, step)
                    writer.write(step, "train", final["train"])
                    shown = final["train"].get("episode_return", float("nan"))
                    bar.set_postfix(episode_return=f"{shown:.2f}", refresh=False)
                save_due = is_due(step, train.checkpoint_every, last)
                if is_due(step, train.eval_every, last):
                    final["eval"] = _evaluate_and_log(experiment, step, writer)
                    stop_if_asked(experiment, step, final["eval"], on_eval, save_due)
                if save_due:
                    experiment.checkpoints.save(step, experiment.state)
            if step < last:  # Ctrl-C: keep the last finished update
                save_and_stop(experiment, step)
    finally:
        bar.close()
        writer.close()
    return final


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    on_eval: EvalCallback | None = None,
) -> dict[str, Any]:
    """Train the RL ``config`` in ``workdir`` (resuming if it holds checkpoints); return the
    final train and eval records and the best eval record, as the supervised
    :func:`attn.train.train_and_evaluate` does (``on_eval`` too)."""
    checked = rl_config.validate(config)  # before the workdir is touched
    if jax.process_count() > 1:
        raise ValueError(
            f"RL runs train on one process; this one is one of {jax.process_count()} (run "
            "`attn run` without --coordinator/--num-processes/--process-id)"
        )
    return run_in_workdir(
        config,
        workdir,
        lambda path: RLExperiment(config, path, checked=checked),
        lambda experiment, start: _train(experiment, start, on_eval),
    )
