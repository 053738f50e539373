"""Training-loop benchmark: time per step of the whole loop against the compiled step alone.

    python -m benchmarks.loop [--experiments reverse mqar dates] [--repeats 5]

An experiment is named by its file in ``experiments/``, optionally with its ``:ARG``
(``reverse:smoke`` runs in seconds, for checking the script itself).

For each experiment (its full config) two measurements alternate, ``--repeats`` times each, and
their medians are reported:

- **step alone**: the compiled train step over ``steps`` batches built and copied to the
  devices beforehand, timed from the first call until the last state is ready;
- **loop**: ``train_and_evaluate`` itself for ``warmup + steps`` steps in a fresh workdir,
  timed by its own ``steps_per_second`` records (every ``train.log_every`` steps, as in the
  config) after the first window (the warm-up, which holds the compilation). Evaluation and
  checkpoints are moved to the last step, after the last timed window, and evaluate one batch.

Both see the same batches (``task.train_batch(i)`` for ``i`` in ``warmup .. warmup + steps``).
The loop's overhead is ``loop / step alone - 1``. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import jax

from attn.train import Experiment, load_config, train_and_evaluate
from attn.train.config import apply_override
from attn.train.writer import read_metrics

__all__ = ["main"]

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
# Steps timed per measurement (multiples of the configs' log_every, 100): seconds to half a
# minute each on a 2-core CPU.
DEFAULT_STEPS = {"reverse": 400, "mqar": 100, "dates": 100}


def _config(name: str, **overrides: object):
    """The config of experiment ``NAME[:ARG]`` with ``overrides`` (dotted keys)."""
    file, _, arg = name.partition(":")
    config = load_config(f"{EXPERIMENTS / file}.py:{arg}")
    for key, value in overrides.items():
        apply_override(config, key, repr(value))
    return config


def time_step_alone(experiment: Experiment, batches: list) -> float:
    """Seconds per step of the compiled step alone over ``batches`` (already on the devices)."""
    state = experiment.state
    start = time.perf_counter()
    for batch in batches:
        state, *_ = experiment._train_step(state, batch, experiment.trial_values)
    jax.block_until_ready(state)
    elapsed = time.perf_counter() - start
    experiment.state = state
    return elapsed / len(batches)


def time_loop(name: str, warmup: int, steps: int, root: Path) -> float:
    """Seconds per step of ``train_and_evaluate`` after ``warmup`` steps, from its own records."""
    workdir = Path(tempfile.mkdtemp(dir=root))
    config = _config(
        name,
        **{
            "train.num_steps": warmup + steps,
            "train.eval_every": 0,
            "train.checkpoint_every": 0,
            "train.eval_batches": 1,
        },
    )
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        train_and_evaluate(config, workdir)
    windows = [
        record
        for record in read_metrics(workdir)
        if record["split"] == "train" and record["step"] > warmup
    ]
    return sum(config.train.log_every / record["steps_per_second"] for record in windows) / steps


def measure(name: str, steps: int, repeats: int, root: Path) -> dict[str, float]:
    """Median seconds per step of the step alone and of the loop, measured alternately."""
    config = _config(name)
    warmup = config.train.log_every
    if steps % warmup:
        raise ValueError(f"{name}: steps={steps} must be a multiple of log_every={warmup}")
    experiment = Experiment(config, Path(tempfile.mkdtemp(dir=root)))
    task = experiment.task
    batches = [experiment.shard(task.train_batch(i)) for i in range(warmup, warmup + steps)]
    time_step_alone(experiment, batches[:2])  # compile
    alone, loop = [], []
    for _ in range(repeats):
        alone.append(time_step_alone(experiment, batches))
        loop.append(time_loop(name, warmup, steps, root))
    experiment.close()
    return {"alone": statistics.median(alone), "loop": statistics.median(loop)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loop", description=__doc__)
    parser.add_argument("--experiments", nargs="+", default=list(DEFAULT_STEPS))
    parser.add_argument("--steps", type=int, help="timed steps (default: per experiment)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"jax {jax.__version__} on {jax.devices()[0].platform}; load average "
        f"{os.getloadavg()[0]:.1f} at the start"
    )
    print()
    print("| experiment | steps | step alone (ms) | loop (ms/step) | loop / step alone |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="loop_benchmark_") as root:
        for name in args.experiments:
            steps = args.steps or DEFAULT_STEPS.get(name, 100)
            result = measure(name, steps, args.repeats, Path(root))
            print(
                f"| {name} | {steps} | {1e3 * result['alone']:.2f} | {1e3 * result['loop']:.2f}"
                f" | {result['loop'] / result['alone']:.3f} |",
                flush=True,
            )
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
