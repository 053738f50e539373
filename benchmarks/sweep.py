"""Sweep throughput benchmark: K trials vmapped in one program against the same K trials run
one after another, as ``attn sweep`` and K ``attn run``s would.

    python -m benchmarks.sweep [--experiments reverse mqar] [--ks 1 2 4 8] [--steps N]
                               [--repeats 1] [--sequential-sample M] [--out FILE.json]

An experiment is named by its file in ``experiments/``, optionally with its ``:ARG``
(``reverse:smoke`` runs in seconds, for checking the script itself).

The K trials of an experiment share its config and differ in the learning rate only: K values
``LR_STEP`` apart, geometric around the experiment's own. Every trial runs ``--steps`` steps
(default: per experiment, ``DEFAULT_STEPS``) with the schedule's warm-up cut to a quarter of
them at most, a log window every tenth of the run, and one evaluation (the whole test split,
with its plots) and one checkpoint, at the last step. Two measurements per K:

- **vmapped**: the K trials validated and trained by
  :func:`attn.train.sweep.vmapped.train_program`, one compiled program;
- **sequential**: each trial by :func:`attn.train.train_and_evaluate` (what ``attn run`` calls,
  in this process: no interpreter start-up per trial, which favours sequential), in turn. With
  ``--sequential-sample M`` only M of the K trials run (spread over the learning rates) and the
  sequential wall time and steady steps are extrapolated as K / M times the sample's; the
  table's "sequential timed" column says so ("4 of 64 (x16.0)"), else it reads "all K".

The sequential runs are split around the program (half before, half after; for K=1 the order
alternates over repeats), so that a shared machine's drifting load falls on both alike; each
ratio is taken within a round and the medians over ``--repeats`` rounds are reported. An
untimed two-step run of each experiment first prepares its data and warms the imports.

Columns: trials/hour from the wall time of the whole run (what a user sees: validation,
compilation, steps, evaluation, plots, checkpoint), and the steady rate in trial-steps/s over
the log windows after the first one (which holds the compilation). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import itertools
import json
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections

from attn.train import load_config, train_and_evaluate
from attn.train.config import apply_override, validate
from attn.train.sweep.space import display_name, trial_id
from attn.train.sweep.trials import Trial, trial_config
from attn.train.sweep.vmapped import train_program
from attn.train.writer import read_metrics

__all__ = ["main"]

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
# Steps per trial, so that the whole benchmark takes ~14 minutes on an idle 2-core CPU. There a
# reverse step takes ~3 ms and a compilation ~4 s: its runs stay compile-bound, as its real
# 1500-step run is; mqar's 60 steps (~80 ms each) last about as long as its compilation.
DEFAULT_STEPS = {"reverse": 500, "mqar": 60}
DEFAULT_KS = (1, 2, 4, 8)
# Ratio of neighbouring learning rates among a program's trials.
LR_STEP = 2**0.5

HEADER = (
    "| experiment | K | steps | sequential timed | sequential (trials/h) | vmapped (trials/h)"
    " | vmapped / sequential"
    " | steady sequential (trial-steps/s) | steady vmapped (trial-steps/s)"
    " | steady vmapped / sequential |"
)


@dataclasses.dataclass
class Run:
    """One timed run of one or more trials: its wall time and its steady trial-steps."""

    seconds: float
    trials: int
    steady_steps: int
    steady_seconds: float

    @property
    def trials_per_hour(self) -> float:
        return 3600 * self.trials / self.seconds

    @property
    def steady_rate(self) -> float:
        return self.steady_steps / self.steady_seconds


def base_config(name: str, steps: int) -> ml_collections.ConfigDict:
    """Experiment ``NAME[:ARG]`` shortened to ``steps`` steps, one evaluation and checkpoint."""
    file, _, arg = name.partition(":")
    config = load_config(f"{EXPERIMENTS / file}.py:{arg}")
    overrides: dict[str, object] = {
        "train.num_steps": steps,
        "train.log_every": max(1, steps // 10),
        "train.eval_every": 0,
        "train.checkpoint_every": 0,
    }
    if "warmup_steps" in config.optim.schedule_kwargs:
        warmup = config.optim.schedule_kwargs.warmup_steps
        overrides["optim.schedule_kwargs.warmup_steps"] = min(warmup, max(1, steps // 4))
    for key, value in overrides.items():
        apply_override(config, key, repr(value))
    return config


def learning_rates(base: float, k: int) -> list[float]:
    """``k`` learning rates ``LR_STEP`` apart, geometric around ``base``."""
    return [float(f"{base * LR_STEP ** (i - (k - 1) / 2):.3g}") for i in range(k)]


def make_trials(base: ml_collections.ConfigDict, k: int) -> list[Trial]:
    """``k`` validated trials of ``base`` differing in the learning rate."""
    trials = []
    for rate in learning_rates(base.optim.learning_rate, k):
        overrides = {"optim.learning_rate": rate}
        config = trial_config(base, overrides)
        trials.append(
            Trial(trial_id(overrides), display_name(overrides), overrides, config, validate(config))
        )
    return trials


def steady_window(workdir: Path) -> tuple[int, float]:
    """Steps and seconds of a run's train log windows after the first."""
    records = [r for r in read_metrics(workdir) if r["split"] == "train"]
    steps, seconds = 0, 0.0
    for previous, record in itertools.pairwise(records):
        window = record["step"] - previous["step"]
        steps += window
        seconds += window / record["steps_per_second"]
    return steps, seconds


@contextlib.contextmanager
def _quiet():
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def run_vmapped(base: ml_collections.ConfigDict, k: int, root: Path) -> Run:
    """The ``k`` trials validated and trained in one vmapped program."""
    start = time.perf_counter()
    with _quiet():
        trials = make_trials(base, k)
        outcomes = train_program(trials, root)
    seconds = time.perf_counter() - start
    failed = [t.name for t in trials if not isinstance(outcomes[t.id], dict)]
    if failed:
        raise RuntimeError(f"vmapped trials diverged: {', '.join(failed)}")
    steps, steady = steady_window(root / "trials" / trials[0].id)
    return Run(seconds, k, k * steps, steady)


def run_alone(trial: Trial, workdir: Path) -> Run:
    """One trial trained by ``train_and_evaluate`` (which validates it first)."""
    start = time.perf_counter()
    with _quiet():
        train_and_evaluate(trial.config, workdir)
    seconds = time.perf_counter() - start
    return Run(seconds, 1, *steady_window(workdir))


def _total(runs: list[Run], trials: int) -> Run:
    """``runs`` added up and extrapolated to ``trials`` trials (``trials / len(runs)`` times
    their totals; exact when every trial ran)."""
    scale = trials / len(runs)
    return Run(
        scale * sum(r.seconds for r in runs),
        trials,
        round(scale * sum(r.steady_steps for r in runs)),
        scale * sum(r.steady_seconds for r in runs),
    )


def sample(trials: list[Trial], size: int | None) -> list[Trial]:
    """``size`` of ``trials`` spread evenly over them (all when ``size`` is None or >= K)."""
    if size is None or size >= len(trials):
        return trials
    if size < 1:
        raise ValueError(f"--sequential-sample must be at least 1, got {size}")
    return [trials[round(i * (len(trials) - 1) / max(size - 1, 1))] for i in range(size)]


def timed_label(timed: int, k: int) -> str:
    """The table's "sequential timed" cell: how many of the K trials ran one by one."""
    return f"all {k}" if timed == k else f"{timed} of {k} (x{k / timed:.1f})"


def measure(
    name: str, k: int, steps: int, repeats: int, root: Path, sequential_sample: int | None = None
) -> dict[str, Any]:
    """Rounds of the sequential runs split around the vmapped program; the median rates and
    ratios over rounds, and each round's runs. ``sequential_sample`` trials run one by one
    (all K if None), their totals extrapolated to K."""
    base = base_config(name, steps)
    trials = make_trials(base, k)
    timed = sample(trials, sequential_sample)
    rounds = []
    for index in range(repeats):
        # K=1: the program first in even rounds, last in odd ones.
        split = len(timed) // 2 if index % 2 == 0 else (len(timed) + 1) // 2
        directory = root / f"{name}-K{k}-round{index}"
        sequential = [run_alone(t, directory / "sequential" / t.id) for t in timed[:split]]
        vmapped = run_vmapped(base, k, directory / "vmapped")
        sequential += [run_alone(t, directory / "sequential" / t.id) for t in timed[split:]]
        shutil.rmtree(directory)
        rounds.append({"sequential": _total(sequential, k), "vmapped": vmapped})
    return {
        "experiment": name,
        "k": k,
        "steps": steps,
        "sequential_timed": len(timed),
        "learning_rates": [t.config.optim.learning_rate for t in trials],
        **summarize(rounds),
        "rounds": [
            {mode: dataclasses.asdict(run) for mode, run in measured.items()} for measured in rounds
        ],
    }


def summarize(rounds: list[dict[str, Run]]) -> dict[str, float]:
    """Median rates of each mode and median ratios (each taken within its round)."""
    values = [
        {
            "sequential_trials_per_hour": r["sequential"].trials_per_hour,
            "vmapped_trials_per_hour": r["vmapped"].trials_per_hour,
            "ratio": r["vmapped"].trials_per_hour / r["sequential"].trials_per_hour,
            "sequential_steady_rate": r["sequential"].steady_rate,
            "vmapped_steady_rate": r["vmapped"].steady_rate,
            "steady_ratio": r["vmapped"].steady_rate / r["sequential"].steady_rate,
        }
        for r in rounds
    ]
    return {key: statistics.median(v[key] for v in values) for key in values[0]}


def row(result: dict[str, Any]) -> str:
    return (
        f"| {result['experiment']} | {result['k']} | {result['steps']}"
        f" | {timed_label(result['sequential_timed'], result['k'])}"
        f" | {result['sequential_trials_per_hour']:.0f} | {result['vmapped_trials_per_hour']:.0f}"
        f" | {result['ratio']:.2f} | {result['sequential_steady_rate']:.1f}"
        f" | {result['vmapped_steady_rate']:.1f} | {result['steady_ratio']:.2f} |"
    )


def warm_up(name: str, root: Path) -> None:
    """An untimed two-step run: generates the data set, imports and first-use caches."""
    config = base_config(name, 2)
    apply_override(config, "train.eval_batches", "1")
    with _quiet():
        train_and_evaluate(config, root / f"{name}-warm-up")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__)
    parser.add_argument("--experiments", nargs="+", default=list(DEFAULT_STEPS))
    parser.add_argument("--ks", nargs="+", type=int, default=list(DEFAULT_KS))
    parser.add_argument("--steps", type=int, help="steps per trial (default: per experiment)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds per experiment and K")
    parser.add_argument(
        "--sequential-sample",
        type=int,
        metavar="M",
        help="run only M of the K trials one by one and extrapolate their time to K",
    )
    parser.add_argument(
        "--out", type=Path, help="also write the results as JSON here (after every row)"
    )
    args = parser.parse_args(argv)
    # Data set builders warn about their custom configurations on every build.
    logging.getLogger("absl").setLevel(logging.ERROR)
    started = time.perf_counter()
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.devices()[0].device_kind})"
    )
    print(f"{machine}; load average {os.getloadavg()[0]:.1f} at the start\n")
    print(HEADER)
    print("|---" * (HEADER.count("|") - 1) + "|")
    results = []
    with tempfile.TemporaryDirectory(prefix="sweep_benchmark_") as root:
        for name in args.experiments:
            warm_up(name, Path(root))
            steps = args.steps or DEFAULT_STEPS.get(name.partition(":")[0], 100)
            for k in args.ks:
                results.append(
                    measure(name, k, steps, args.repeats, Path(root), args.sequential_sample)
                )
                print(row(results[-1]), flush=True)
                if args.out:
                    # Rewritten after every row: a run stopped at a later K keeps these.
                    report = {"machine": machine, "results": results}
                    args.out.write_text(json.dumps(report, indent=1) + "\n")
    minutes = (time.perf_counter() - started) / 60
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end; {minutes:.1f} minutes in all")


if __name__ == "__main__":
    main()
