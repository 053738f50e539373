"""K trials in one compiled program: stacked states, ``jax.vmap`` of the train step.

Each trial is an :class:`attn.train.Experiment` in its own workdir, built exactly as
``attn run`` builds it (its own initial parameters, optimizer state with its hyperparameters,
dropout keys), so the vmapped program computes what the K runs alone would. The stacked state
has a leading trial axis, sharded over the ``"trial"`` axis of a ``("trial", "data")`` mesh;
the batch is split over ``"data"`` (one batch for all trials when they share the data seed,
else one per trial). A trial's logs, evaluations, plots and checkpoints are its own run's:
at each log, eval or save step its slice of the stacked state is handed to the usual code.

Checkpoints are saved at the same steps for every trial, so a killed program resumes as a
unit from the newest step every trial still keeps.
"""

from __future__ import annotations

import collections
import contextlib
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from attn.models.options import float_values
from attn.train import config as config_lib
from attn.train import workdir as workdir_lib
from attn.train.interrupt import TrainingInterrupted, stop_requests
from attn.train.loop import (
    EvalCallback,
    Experiment,
    NonFiniteLossError,
    StoppedByCallback,
    TrainLog,
    evaluate_and_log,
    is_due,
    report_run,
)
from attn.train.prefetch import Prefetcher
from attn.train.sweep.trials import Trial
from attn.train.writer import MetricWriter

__all__ = [
    "MEMORY_HEADROOM",
    "Outcome",
    "ProgramTooLarge",
    "check_memory",
    "device_memory_limit",
    "program_mesh",
    "train_program",
]

# What a trial's run ended with: its final records (as train_and_evaluate returns them), or
# what stopped it (a diverged or pruned trial stops; the others go on).
Outcome = dict[str, Any] | NonFiniteLossError | StoppedByCallback


def program_mesh(num_trials: int) -> jax.sharding.Mesh:
    """A ``("trial", "data")`` mesh of the local devices: as many devices on the trial axis as
    divide both ``num_trials`` and the device count, the rest on the data axis."""
    devices = jax.local_device_count()
    trial_devices = math.gcd(num_trials, devices)
    return jax.make_mesh(
        (trial_devices, devices // trial_devices),
        ("trial", "data"),
        axis_types=(jax.sharding.AxisType.Auto,) * 2,
    )


class ProgramTooLarge(RuntimeError):
    """K trials' compiled program needs more device memory than there is; ``fits`` trials
    would (by the program's own memory analysis, which grows about linearly in K)."""

    def __init__(self, num_trials: int, needed: int, limit: int, fits: int):
        super().__init__(
            f"{num_trials} vmapped trials need {needed / 2**30:.2f} GiB per device of "
            f"{limit / 2**30:.2f} GiB; {fits} fit"
        )
        self.fits = fits


MEMORY_HEADROOM = 0.9  # of the device's memory a program may plan to use


def device_memory_limit() -> int | None:
    """Bytes of memory of a local device, or None where the backend does not say (CPU)."""
    stats = jax.local_devices()[0].memory_stats()
    return (stats or {}).get("bytes_limit")


def check_memory(compiled: jax.stages.Compiled, num_trials: int) -> None:
    """Raise :class:`ProgramTooLarge` if ``compiled`` (a program of ``num_trials`` trials)
    needs more than :data:`MEMORY_HEADROOM` of a device's memory."""
    limit = device_memory_limit()
    analysis = compiled.memory_analysis()
    if not limit or analysis is None:
        return
    needed = (
        analysis.argument_size_in_bytes
        + analysis.output_size_in_bytes
        + analysis.temp_size_in_bytes
        - analysis.alias_size_in_bytes
    )
    budget = MEMORY_HEADROOM * limit
    if needed > budget:
        fits = max(1, int(num_trials * budget / needed))
        raise ProgramTooLarge(num_trials, needed, limit, min(fits, num_trials - 1))


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _restore_together(experiments: Sequence[Experiment]) -> int:
    """Restore every trial at the newest step all of them keep; returns that step.

    A program killed while saving leaves some trials one checkpoint ahead: those go back to
    the common step (``train.max_to_keep >= 2`` keeps it), so the program resumes as a unit.
    """
    initial = [experiment.state for experiment in experiments]
    steps = [experiment.restore(missing_ok=True) for experiment in experiments]
    start = min(steps)
    for experiment, step, state in zip(experiments, steps, initial, strict=True):
        if step == start:
            continue
        if start == 0:
            experiment.state = state
        else:
            experiment.restore(step=start)
    return start


class _Program:
    """The host side of one vmapped program: stepping, reading metrics behind the devices,
    and handing each trial's slice to its own logs, evaluations and checkpoints."""

    def __init__(self, experiments: Sequence[Experiment], start: int):
        self.experiments = list(experiments)
        template = self.experiments[0]
        self.mesh = program_mesh(len(self.experiments))
        self.trial_sharding = NamedSharding(self.mesh, P("trial"))
        self.state = jax.device_put(
            _stack([e.state for e in self.experiments]), self.trial_sharding
        )
        model_values = [float_values(e.options) for e in self.experiments]
        varying = [key for key in model_values[0] if len({v[key] for v in model_values}) > 1]
        self.trial_values = jax.device_put(
            {
                "rng": _stack([e.trial_values["rng"] for e in self.experiments]),
                "model": {
                    key: jnp.asarray([v[key] for v in model_values], jnp.float32) for key in varying
                },
            },
            self.trial_sharding,
        )
        # Trials with one data seed read the same batches: read them once.
        self.shared_batches = len({e.config.data.seed for e in self.experiments}) == 1
        batch_axis = None if self.shared_batches else 0
        step = jax.jit(
            jax.vmap(template._train_step_fn, in_axes=(0, batch_axis, 0)), donate_argnums=0
        )
        # Compiled now, before anything is written: its memory analysis says whether K trials
        # fit on the devices.
        self._step = step.lower(self.state, self.batch(start), self.trial_values).compile()
        check_memory(self._step, len(self.experiments))
        self._params_finite = jax.jit(jax.vmap(Experiment._all_finite))
        self.writers = [MetricWriter(e.workdir, resume_step=start) for e in self.experiments]
        self.logs = [
            TrainLog(e, writer, None)
            for e, writer in zip(self.experiments, self.writers, strict=True)
        ]
        self.active = list(range(len(self.experiments)))
        self.failures: dict[int, NonFiniteLossError | StoppedByCallback] = {}
        self.pending: collections.deque = collections.deque()

    def batch(self, step: int) -> dict[str, jax.Array]:
        if self.shared_batches:
            batch = self.experiments[0].task.train_batch(step)
            return jax.device_put(batch, NamedSharding(self.mesh, P("data")))
        batches = [e.task.train_batch(step) for e in self.experiments]
        stacked = {name: np.stack([b[name] for b in batches]) for name in batches[0]}
        return jax.device_put(stacked, NamedSharding(self.mesh, P("trial", "data")))

    def stop(self, index: int, error: NonFiniteLossError | StoppedByCallback) -> None:
        """Trial ``index`` takes no further part (its slice is still computed, and ignored)."""
        self.failures[index] = error
        self.active.remove(index)
        tqdm.write(f"{self.experiments[index].workdir.name}: {error}", file=sys.stderr)

    def _read(self, step: int, metrics: dict[str, jax.Array], finite: jax.Array) -> None:
        values, finite = jax.device_get((metrics, finite))
        for index in list(self.active):
            try:
                self.logs[index].take(step, {k: v[index] for k, v in values.items()}, finite[index])
            except NonFiniteLossError as error:
                self.stop(index, error)

    def dispatch(self, step: int, batch: dict[str, jax.Array]) -> None:
        self.state, metrics, finite = self._step(self.state, batch, self.trial_values)
        self.pending.append((step, metrics, finite))
        while len(self.pending) > TrainLog.READ_BEHIND:
            self._read(*self.pending.popleft())

    def flush(self) -> None:
        """Read every dispatched step and check each trial's parameters (see TrainLog.flush)."""
        while self.pending:
            self._read(*self.pending.popleft())
        finite = jax.device_get(self._params_finite(self.state["params"]))
        for index in list(self.active):
            if not finite[index]:
                step = int(self.state["step"][index])
                try:
                    self.logs[index].diverged(step, "the parameters became non-finite")
                except NonFiniteLossError as error:
                    self.stop(index, error)

    def hand_over(self, index: int) -> Experiment:
        """Trial ``index``'s experiment holding its slice of the stacked state."""
        experiment = self.experiments[index]
        experiment.state = jax.device_put(
            jax.tree.map(lambda x: x[index], self.state), NamedSharding(experiment.mesh, P())
        )
        return experiment

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


def _train_together(
    experiments: Sequence[Experiment],
    start: int,
    on_eval: Sequence[EvalCallback | None],
) -> list[Outcome]:
    """Steps ``start + 1 ..`` of every trial (the same run length and logging steps); each
    trial's last records, or what stopped it. ``on_eval[i]`` is trial i's callback (see
    :func:`attn.train.train_and_evaluate`)."""
    train = experiments[0].config.train
    last = train.num_steps
    program = _Program(experiments, start)
    finals: list[dict[str, Any]] = [{} for _ in experiments]
    bar = tqdm(
        total=last,
        initial=start,
        desc=f"{len(experiments)} trials",
        unit="step",
        dynamic_ncols=True,
    )
    batches = Prefetcher(program.batch, range(start, last))
    try:
        with stop_requests() as stop, batches:
            step = start
            while step < last and not stop.is_set() and program.active:
                step += 1
                program.dispatch(step, next(batches))
                bar.update(1)
                log_due, eval_due, save_due = (
                    is_due(step, every, last)
                    for every in (train.log_every, train.eval_every, train.checkpoint_every)
                )
                if not (log_due or eval_due or save_due):
                    continue
                program.flush()
                for index in list(program.active):
                    if log_due:
                        finals[index]["train"] = program.logs[index].write(step)
                    if eval_due or save_due:
                        experiment = program.hand_over(index)
                    if eval_due:
                        finals[index]["eval"] = evaluate_and_log(
                            experiment, step, program.writers[index]
                        )
                    if save_due:
                        experiment.checkpoints.save(step, experiment.state)
                    callback = on_eval[index]
                    if eval_due and callback is not None and callback(step, finals[index]["eval"]):
                        message = f"stopped after the evaluation of step {step}"
                        program.stop(index, StoppedByCallback(message))
            if step < last and program.active:  # stopped by Ctrl-C
                program.flush()
                tqdm.write(
                    f"Ctrl-C: saving checkpoints of step {step} (Ctrl-C again quits without)",
                    file=sys.stderr,
                )
                paths = [
                    program.hand_over(i).checkpoints.save(step, program.experiments[i].state)
                    for i in program.active
                ]
                raise TrainingInterrupted(
                    f"interrupted at step {step}; checkpoints saved ({len(paths)} trials). Run "
                    "the same command again to resume.",
                    step=step,
                    path=paths[0].parent.parent,
                )
    finally:
        bar.close()
        program.close()
    return [program.failures.get(index, final) for index, final in enumerate(finals)]


def train_program(
    trials: Sequence[Trial],
    root: Path,
    *,
    on_eval: Mapping[str, EvalCallback] | None = None,
) -> dict[str, Outcome]:
    """Train ``trials`` (of one program key, see :mod:`attn.train.sweep.groups`) vmapped, each
    in ``root/trials/<id>/``, resuming them together; returns each trial's outcome by id.
    ``on_eval`` maps a trial id to its callback after each evaluation (True: stop that trial).

    Holds every trial's workdir lock; a trial whose config differs from its workdir's saved one
    beyond the resumable keys fails before anything is built (as ``attn run`` would). Raises
    :class:`ProgramTooLarge` before the first step if the program does not fit in memory.
    """
    workdirs = [Path(root) / "trials" / trial.id for trial in trials]
    with contextlib.ExitStack() as stack:
        for trial, workdir in zip(trials, workdirs, strict=True):
            workdir_lib.require_directory(workdir, create=True)
            stack.enter_context(workdir_lib.WorkdirLock(workdir))
            workdir_lib.check_resumable(trial.config, workdir / workdir_lib.CONFIG_FILE)
        experiments = []
        for trial, workdir in zip(trials, workdirs, strict=True):
            experiments.append(Experiment(trial.config, workdir, checked=trial.checked))
            stack.callback(experiments[-1].close)
            config_lib.save_json(trial.config, workdir / workdir_lib.CONFIG_FILE)
        start = _restore_together(experiments)
        callbacks = [(on_eval or {}).get(trial.id) for trial in trials]
        outcomes = _train_together(experiments, start, callbacks)
    return {
        trial.id: outcome
        if isinstance(outcome, NonFiniteLossError | StoppedByCallback)
        else report_run(trial.config, workdir, outcome, start)
        for trial, workdir, outcome in zip(trials, workdirs, outcomes, strict=True)
    }
