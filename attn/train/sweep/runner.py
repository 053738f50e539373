"""``attn sweep``: every trial of an experiment's ``sweep()`` run once, vmapped where trials can
share a program, each in its own workdir ``W/trials/<id>/``, and the results summarized.

Trials are handed out by an Optuna study (:mod:`attn.train.sweep.study`): by default a journal
file in ``W``, so a re-run skips finished trials, resumes partial ones from their checkpoints
and retries failed ones; with ``storage="postgresql://..."`` every machine running the same
command takes its share. Each trial's ``trial.json`` records its status for the summary.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from tqdm.auto import tqdm

from attn.train.interrupt import TrainingInterrupted
from attn.train.loop import (
    NonFiniteLossError,
    StoppedByCallback,
    best_record,
    train_and_evaluate,
)
from attn.train.sweep import study as study_lib
from attn.train.sweep.groups import plan_programs, program_key
from attn.train.sweep.pool import device_slots, run_in_pool
from attn.train.sweep.status import STATUS_FILE, read_status, write_status
from attn.train.sweep.summary import TrialRecord, write_summary
from attn.train.sweep.trials import Trial, load_sweep, make_trial
from attn.train.sweep.vmapped import ProgramTooLarge, train_program
from attn.train.writer import read_metrics

__all__ = ["read_records", "run_sweep", "summarize"]


def read_records(workdir: Path) -> list[TrialRecord]:
    """Every trial under ``workdir/trials`` as a summary record (best eval metric from its
    ``metrics.jsonl``, by its own config's ``train.best_metric``)."""
    records = []
    for path in sorted(Path(workdir).glob(f"trials/*/{STATUS_FILE}")):
        status = json.loads(path.read_text())
        config = json.loads((path.parent / "config.json").read_text())
        metric, mode = config["train"]["best_metric"], config["train"]["best_mode"]
        rows = read_metrics(path.parent)
        best = best_record(rows, metric, mode)
        evals = [row for row in rows if row["split"] == "eval"]
        records.append(
            TrialRecord(
                id=status["id"],
                name=status["name"],
                overrides=status["overrides"],
                status=status["status"],
                group=status.get("group", ""),
                best=best.get(metric),
                best_step=best.get("step"),
                final=evals[-1] if evals else {},
                wall_seconds=status.get("wall_seconds"),
                error=status.get("error"),
            )
        )
    return records


def summarize(workdir: Path, metric: str, mode: str) -> str:
    """Write ``sweep.jsonl``, ``results.md`` and ``plots/`` from the trials' files; returns the
    text of ``results.md``."""
    records = read_records(workdir)
    if not records:
        raise ValueError(f"no trials in {Path(workdir) / 'trials'} yet")
    write_summary(workdir, records, metric, mode)
    return (Path(workdir) / "results.md").read_text()


Callback = Callable[[int, dict[str, Any]], bool]


def _run_program(
    program: Sequence[Trial],
    workdir: Path,
    callbacks: dict[str, Callback],
) -> dict[str, tuple[str, float | None, str | None]]:
    """Train one program (one trial alone, as ``attn run`` would, or several vmapped); each
    trial's ``(status, best value, error)``."""
    group = program_key(program[0])
    for trial in program:
        write_status(workdir, trial, "running", group=group, size=len(program))
    started = time.perf_counter()
    try:
        if len(program) == 1:
            trial = program[0]
            try:
                train = train_and_evaluate
                if "env" in trial.config:
                    from attn.rl import train_and_evaluate as train  # only RL sweeps import it
                outcomes = {
                    trial.id: train(
                        trial.config,
                        workdir / "trials" / trial.id,
                        on_eval=callbacks.get(trial.id),
                    )
                }
            except (NonFiniteLossError, StoppedByCallback) as error:
                outcomes = {trial.id: error}
        else:
            outcomes = train_program(program, workdir, on_eval=callbacks)
    except ProgramTooLarge as error:  # nothing ran: run it in smaller programs
        tqdm.write(f"program {group}: {error}; running {error.fits} at a time")
        results = {}
        for start in range(0, len(program), error.fits):
            results.update(_run_program(program[start : start + error.fits], workdir, callbacks))
        return results
    except (KeyboardInterrupt, TrainingInterrupted):
        for trial in program:
            write_status(workdir, trial, "interrupted", group=group, size=len(program))
        raise
    except Exception as error:  # the program failed as a whole: every trial in it failed
        message = "".join(traceback.format_exception_only(error)).strip()
        tqdm.write(f"program {group} failed: {traceback.format_exc()}")
        outcomes = {trial.id: RuntimeError(message) for trial in program}
    seconds = time.perf_counter() - started
    results = {}
    for trial in program:
        outcome = outcomes[trial.id]
        metric = trial.config.train.best_metric
        if isinstance(outcome, StoppedByCallback):
            status, value, error = "pruned", None, str(outcome)
        elif isinstance(outcome, Exception):
            status, value, error = "failed", None, str(outcome)
        else:
            status, value, error = "done", outcome["best"].get(metric), None
            if value is None:
                status, error = "failed", f"no eval record of {metric}"
        write_status(
            workdir,
            trial,
            status,
            group=group,
            size=len(program),
            wall_seconds=seconds,
            error=error,
        )
        results[trial.id] = (status, value, error)
    return results


@dataclasses.dataclass(frozen=True)
class _Sweep:
    """What every batch of a sweep is run with."""

    spec: str
    command_line: Sequence[tuple[str, str]]
    workdir: Path
    max_trials_per_program: int
    prune: bool


def _run_batch(
    sweep: _Sweep,
    study: optuna.Study,
    claims: Sequence[study_lib.Claimed],
    trials: Sequence[Trial],
    bar: tqdm,
) -> None:
    """Run the claimed ``trials`` and tell the study how each ended: programs of several trials
    vmapped in this process; single trials side by side on several accelerators (one
    ``attn run`` per device) or, on one device, here one after another."""
    workdir = sweep.workdir
    by_id = {claimed.attn_id: claimed for claimed in claims}
    callbacks: dict[str, Callback] = {}
    if sweep.prune:
        for trial in trials:
            metric = trial.config.train.best_metric
            claimed = by_id[trial.id]
            callbacks[trial.id] = lambda step, record, c=claimed, m=metric: study_lib.report(
                c, step, record[m]
            )
    finished: set[str] = set()

    def tell(trial_id: str, status: str, value: float | None) -> None:
        state = {"done": "complete", "failed": "fail", "pruned": "pruned"}.get(status)
        study_lib.finish(study, by_id[trial_id], value=value, state=state or "interrupted")
        finished.add(trial_id)
        bar.update(1)

    programs = plan_programs(trials, sweep.max_trials_per_program)
    slots = [] if sweep.prune else device_slots()  # pruning needs the evaluations in-process
    alone = [program[0] for program in programs if len(program) == 1] if len(slots) > 1 else []
    try:
        if alone:
            run_in_pool(
                alone,
                sweep.spec,
                sweep.command_line,
                workdir,
                slots,
                lambda trial, status, value, _: tell(trial.id, status, value),
            )
        for program in programs:
            if len(program) == 1 and alone:
                continue
            for trial_id, (status, value, _) in _run_program(program, workdir, callbacks).items():
                tell(trial_id, status, value)
    finally:  # Ctrl-C or a crash: the trials not run go back to the queue
        for claimed in claims:
            if claimed.attn_id not in finished:
                study_lib.finish(study, claimed, state="interrupted")


def run_sweep(
    spec: str,
    workdir: Path,
    command_line: Sequence[tuple[str, str]] = (),
    *,
    max_trials_per_program: int = 8,
    max_retries: int = 1,
    storage: str | None = None,
    search_trials: int | None = None,
    shard: tuple[int, int] | None = None,
) -> str:
    """Run the trials of ``spec``'s ``sweep()`` not yet finished in ``workdir``, then write the
    summary; returns the results table.

    ``search_trials``: instead of the listed trials, that many proposed by Optuna's TPE
    sampler over ``sweep()``'s distributions (``sweep`` must return
    :func:`~attn.train.sweep.space.random` draws), pruned by the median rule on eval values.
    ``shard=(i, n)``: only the i-th of n shares of the trials, without a study (for array
    jobs); the summary then covers the trials this workdir holds.
    """
    if max_trials_per_program < 1:
        raise ValueError(f"--max-trials-per-program must be >= 1, got {max_trials_per_program}")
    if max_retries < 0:
        raise ValueError(f"--max-retries must be >= 0, got {max_retries}")
    workdir = Path(workdir)
    base, overrides_list = load_sweep(spec, command_line)
    metric, mode = base.train.best_metric, base.train.best_mode
    search = None
    if search_trials is not None:
        distributions = getattr(overrides_list, "distributions", None)
        if distributions is None:
            raise ValueError(
                "--search needs sweep() to return attn.train.sweep.random(...) draws, whose "
                "distributions the sampler searches"
            )
        search = study_lib.Search(distributions, search_trials)
        trials: dict[str, Trial] = {}
    else:
        trials = {}
        for overrides in overrides_list:
            trial = make_trial(base, overrides)
            trials.setdefault(trial.id, trial)
    workdir.mkdir(parents=True, exist_ok=True)
    if shard is not None:
        if search is not None:
            raise ValueError("--shard splits a listed sweep; it cannot be used with --search")
        chosen = study_lib.shard(list(trials.values()), *shard)
        pending = [t for t in chosen if read_status(workdir, t) != "done"]
        with tqdm(total=len(chosen), initial=len(chosen) - len(pending), desc="trials") as bar:
            for program in plan_programs(pending, max_trials_per_program):
                _run_program(program, workdir, {})
                bar.update(len(program))
        return summarize(workdir, metric, mode)
    optuna.logging.set_verbosity(logging.WARNING)
    study = study_lib.open_study(
        workdir,
        storage,
        mode=mode,
        sampler="tpe" if search else None,
        max_retries=max_retries,
    )
    study_lib.enqueue(study, list(trials.values()))
    sweep = _Sweep(spec, command_line, workdir, max_trials_per_program, search is not None)
    total = search.n if search else len(trials)
    done = sum(read_status(workdir, t) == "done" for t in trials.values())
    with tqdm(total=total, initial=done, desc="trials", unit="trial") as bar:
        for claims in study_lib.batches(study, max_trials_per_program, search=search):
            chosen = [trials.get(c.attn_id) or make_trial(base, c.overrides) for c in claims]
            _run_batch(sweep, study, claims, chosen, bar)
    return summarize(workdir, metric, mode)
