"""`attn sweep` end to end, as users run it: the reverse :smoke grid (2 learning rates x 2
seeds) in one vmapped program with its summary and a re-run that does nothing, resume after
SIGKILL as a unit, the trial axis sharded over 8 fake devices, two workers on a PostgreSQL
study with one killed mid-trial, --print-commands, and bad input refused before anything runs.

Every trial's result is compared with the same trial trained alone by ``train_and_evaluate``.
Those alone runs and the plain sweep are made once per session, shared by the xdist workers
(under a file lock) so that the tests that need them do not train them again; every subprocess
shares one JAX compilation cache of the session (same programs, compiled once: about 4x faster
on 2 cores, and the same executables as without it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from attn import cli, data
from attn.train.sweep import study as sweep_study
from attn.train.sweep.trials import load_trials

from . import postgres
from .helpers import REVERSE, ROOT, checkpoint_steps, fake_devices, params_of, sweep_experiment

SPEC = f"{REVERSE}:smoke"
NUM_STEPS = 8
# A checkpoint every 2 steps (so that a killed program has some to resume from), one eval.
OVERRIDES = {
    "train.num_steps": str(NUM_STEPS),
    "train.checkpoint_every": "2",
    "train.eval_every": str(NUM_STEPS),
}
ARGUMENTS = [f"--config.{key}={value}" for key, value in OVERRIDES.items()]
PAIRS = [f"{key}={value}" for key, value in OVERRIDES.items()]
TIMEOUT = 600


# Set by the `shared` fixture: the session's JAX compilation cache for every subprocess.
COMPILATION_CACHE: dict[str, str] = {}


def environment(**extra: str) -> dict[str, str]:
    # Read at call time: conftest sets TFDS_DATA_DIR for the session after helpers is imported.
    return {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(ROOT),
        **COMPILATION_CACHE,
        **extra,
    }


def attn_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "attn", *arguments]


def sweep_command(workdir: Path, *extra: str) -> list[str]:
    return attn_command("sweep", SPEC, "--workdir", str(workdir), *ARGUMENTS, *extra)


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, env=environment(), capture_output=True, text=True, timeout=TIMEOUT, **kwargs
    )


def trials():
    """The sweep's trials, with the configs `attn sweep` gives them."""
    return load_trials(SPEC, list(OVERRIDES.items()))


def trial_dir(workdir: Path, trial_id: str) -> Path:
    return workdir / "trials" / trial_id


def status(directory: Path) -> dict:
    return json.loads((directory / "trial.json").read_text())


def logged_steps(workdir: Path) -> list[tuple[int, str]]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [(record["step"], record["split"]) for record in map(json.loads, lines)]


def sweep_lines(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "sweep.jsonl").read_text().splitlines()]


def assert_close_params(got_dir: Path, want_dir: Path) -> None:
    want = params_of(want_dir)
    got = params_of(got_dir)
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL a process started with start_new_session (its whole group) and reap it at once:
    a zombie's pid reads as alive to the study's dead-worker check."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def first_step(output: str, bar: str) -> int:
    """The step progress bar ``bar`` (a trial's id, or "4 trials" for a program) starts at: a
    resumed run's bar starts at the step of the checkpoint it restored."""
    for line in re.split(r"[\r\n]", output):
        match = re.search(rf"{bar}:.*?\| *(\d+)/{NUM_STEPS} \[", line)
        if match:
            return int(match.group(1))
    raise AssertionError(f"no progress bar of {bar} in:\n{output[-3000:]}")


def wait_until(condition, process: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"exited ({process.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} in {TIMEOUT} s")
        time.sleep(0.01)


# --- Shared between the xdist workers ------------------------------------------------------------


@pytest.fixture(scope="session")
def shared(tmp_path_factory) -> Path:
    """A folder every xdist worker of this session sees (their basetemps' common parent)."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "sweep-cli-shared"
    root.mkdir(parents=True, exist_ok=True)
    COMPILATION_CACHE.update(
        JAX_COMPILATION_CACHE_DIR=str(root / "jax-cache"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
    )
    yield root
    COMPILATION_CACHE.clear()


@contextlib.contextmanager
def exclusive(path: Path):
    with open(path, "a") as stream:
        fcntl.flock(stream, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(stream, fcntl.LOCK_UN)


def once(shared: Path, name: str, make) -> Path:
    """``shared/name``, made by ``make(path)`` by whichever worker asks first."""
    path = shared / name
    with exclusive(shared / f"{name}.lock"):
        if not (shared / f"{name}.done").exists():
            make(path)
            (shared / f"{name}.done").touch()
    return path


ALONE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from attn.train import train_and_evaluate
    from attn.train.sweep.trials import load_trials

    spec, root, *pairs = sys.argv[1:]
    for trial in load_trials(spec, [tuple(pair.split("=", 1)) for pair in pairs]):
        train_and_evaluate(trial.config, Path(root) / trial.id)
    """
)


@pytest.fixture(scope="session")
def alone(shared):
    """trial -> the workdir of that trial trained alone with train_and_evaluate (all trials
    trained in one process: the compilation cache makes each after the first cheap)."""

    def make(path: Path) -> None:
        result = run([sys.executable, "-c", ALONE, SPEC, str(path), *PAIRS])
        assert result.returncode == 0, result.stderr[-3000:]

    root = once(shared, "alone", make)
    return lambda trial: root / trial.id


@pytest.fixture(scope="session")
def swept(shared) -> Path:
    """A sweep run once from scratch; its stdout, stderr and wall time next to it."""

    def make(path: Path) -> None:
        started = time.monotonic()
        result = run(sweep_command(path))
        (shared / "swept.json").write_text(
            json.dumps(
                {
                    "returncode": result.returncode,
                    "stdout": result.stdout,
                    "stderr": result.stderr,
                    "seconds": time.monotonic() - started,
                }
            )
        )

    workdir = once(shared, "swept", make)
    first = json.loads((shared / "swept.json").read_text())
    assert first["returncode"] == 0, first["stderr"][-3000:]
    return workdir


# --- 1. One vmapped program, the summary, and a re-run that does nothing -------------------------


@pytest.mark.slow
def test_smoke_sweep_runs_one_vmapped_program_and_a_rerun_only_prints(swept, shared):
    first = json.loads((shared / "swept.json").read_text())
    ids = sorted(trial.id for trial in trials())
    assert sorted(p.name for p in (swept / "trials").iterdir()) == ids
    statuses = [status(trial_dir(swept, i)) for i in ids]
    assert {s["status"] for s in statuses} == {"done"}
    assert {s["size"] for s in statuses} == {4}
    assert len({s["group"] for s in statuses}) == 1  # all four in one program
    for trial_id in ids:
        directory = trial_dir(swept, trial_id)
        assert (directory / "config.json").is_file()
        assert logged_steps(directory)[-1] == (NUM_STEPS, "eval")
        assert checkpoint_steps(directory / "checkpoints" / "latest")[-1] == NUM_STEPS
    lines = sweep_lines(swept)
    assert sorted(line["id"] for line in lines) == ids
    assert {line["status"] for line in lines} == {"done"}
    assert all(line["best_step"] == NUM_STEPS for line in lines)
    results = (swept / "results.md").read_text()
    assert "| lr=0.001 |" in results and "| lr=0.003 |" in results
    plots = sorted((swept / "plots").glob("*.png"))
    assert len(plots) >= 2 and all(p.stat().st_size > 0 for p in plots)
    assert first["stdout"].rstrip().endswith(results.rstrip())

    # Any trial is a normal run workdir.
    evaluated = run(attn_command("eval", "--workdir", str(trial_dir(swept, ids[0]))))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert evaluated.stdout.startswith(f"best checkpoint (step {NUM_STEPS}) on test: loss ")

    # Re-running trains nothing, changes no trial file, and prints the table.
    watched = [
        path
        for i in ids
        for path in (trial_dir(swept, i) / "trial.json", trial_dir(swept, i) / "metrics.jsonl")
    ]
    before = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in watched}
    checkpoints = {i: checkpoint_steps(trial_dir(swept, i) / "checkpoints" / "latest") for i in ids}
    started = time.monotonic()
    again = run(sweep_command(swept))
    seconds = time.monotonic() - started
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.strip() == results.strip()
    assert "done:" not in again.stdout and "eval loss" not in again.stdout
    assert {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in watched} == before
    assert {
        i: checkpoint_steps(trial_dir(swept, i) / "checkpoints" / "latest") for i in ids
    } == checkpoints
    assert seconds < first["seconds"], (seconds, first["seconds"])


# --- 2. SIGKILL and resume as a unit -------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_sweep_resumes_each_trial_exactly(tmp_path, alone):
    workdir = tmp_path / "sweep"
    log = tmp_path / "first.log"
    all_trials = trials()
    latest = {t.id: trial_dir(workdir, t.id) / "checkpoints" / "latest" for t in all_trials}
    with open(log, "wb") as stream:
        process = subprocess.Popen(
            sweep_command(workdir),
            env=environment(),
            stdout=stream,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(
            lambda: all(checkpoint_steps(path) for path in latest.values()),
            process,
            "a checkpoint of every trial",
            log,
        )
    finally:
        kill_group(process)
    at_kill = {i: checkpoint_steps(path) for i, path in latest.items()}
    common = min(max(steps) for steps in at_kill.values())
    assert common < NUM_STEPS, at_kill
    assert {status(trial_dir(workdir, i))["status"] for i in latest} == {"running"}

    resumed = run(sweep_command(workdir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # The program resumed as a unit from the newest checkpoint every trial had.
    assert first_step(resumed.stderr, f"{len(all_trials)} trials") == common
    assert {line["status"] for line in sweep_lines(workdir)} == {"done"}
    assert len(sweep_lines(workdir)) == len(all_trials)
    for trial in all_trials:
        directory = trial_dir(workdir, trial.id)
        assert status(directory)["size"] == len(all_trials)
        reference = alone(trial)
        assert_close_params(directory, reference)
        assert logged_steps(directory) == logged_steps(reference), trial.name


# --- 3. The trial axis sharded over devices ------------------------------------------------------

ON_EIGHT_DEVICES = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import jax
    from attn.train.sweep import vmapped
    from attn.train.sweep.trials import load_trials

    spec, root, *pairs = sys.argv[1:]
    seen = {"devices": jax.local_device_count(), "mesh4": dict(vmapped.program_mesh(4).shape)}
    init, batch = vmapped._Program.__init__, vmapped._Program.batch

    def spy_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        leaf = jax.tree.leaves(self.state["params"])[0]
        seen["mesh"] = dict(self.mesh.shape)
        seen["param"] = [list(leaf.shape), list(leaf.sharding.shard_shape(leaf.shape))]
        seen["param_devices"] = len(leaf.sharding.device_set)

    def spy_batch(self, step):
        out = batch(self, step)
        inputs = out["inputs"]
        seen["batch"] = [list(inputs.shape), list(inputs.sharding.shard_shape(inputs.shape))]
        return out

    vmapped._Program.__init__, vmapped._Program.batch = spy_init, spy_batch
    trials = load_trials(spec, [tuple(p.split("=", 1)) for p in pairs])
    outcomes = vmapped.train_program(trials, Path(root))
    seen["ids"] = sorted(outcomes)
    print("SEEN " + json.dumps(seen))
    """
)


@pytest.mark.slow
def test_trial_axis_sharded_over_eight_devices_equals_alone_runs(tmp_path, alone):
    all_trials = trials()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            ON_EIGHT_DEVICES,
            SPEC,
            str(tmp_path),
            *PAIRS,
        ],
        env=environment(XLA_FLAGS=fake_devices(8)),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("SEEN ")]
    seen = json.loads(line.removeprefix("SEEN "))
    assert seen["devices"] == 8
    assert seen["mesh4"] == seen["mesh"] == {"trial": 4, "data": 2}
    (shape, shard) = seen["param"]
    assert shape[0] == 4 and shard[0] == 1 and shard[1:] == shape[1:]  # one trial per device
    assert seen["param_devices"] == 8
    (shape, shard) = seen["batch"]  # one shared batch (equal data seeds), split over "data"
    assert shape[0] == 8 and shard[0] == 4
    assert seen["ids"] == sorted(t.id for t in all_trials)
    for trial in all_trials:
        directory = trial_dir(tmp_path, trial.id)
        reference = alone(trial)
        assert_close_params(directory, reference)
        assert logged_steps(directory) == logged_steps(reference), trial.name


# --- 4. Two workers on PostgreSQL, one killed mid-trial ------------------------------------------


@pytest.fixture
def postgres_url():
    with postgres.server() as url:
        yield url


def counted_states(study: optuna.Study) -> dict[str, list[TrialState]]:
    """attn id -> the states of its trials that count (not skipped duplicates), in order."""
    states: dict[str, list[TrialState]] = {}
    for trial in study.get_trials(deepcopy=False):
        if sweep_study.SKIPPED not in trial.user_attrs:
            states.setdefault(trial.user_attrs[sweep_study.ATTN_ID], []).append(trial.state)
    return states


@pytest.mark.slow
def test_two_postgresql_workers_one_killed_mid_trial(tmp_path, postgres_url, alone):
    all_trials = {t.id: t for t in trials()}
    # The dataset is generated (in this xdist worker's TFDS_DATA_DIR) before two workers read it.
    data.get_task(next(iter(all_trials.values())).config.data)
    workdir = tmp_path / "sweep"
    command = sweep_command(workdir, "--storage", postgres_url, "--max-trials-per-program", "1")
    workers, logs = [], []
    for index in range(2):
        logs.append(tmp_path / f"worker{index}.log")
        with open(logs[-1], "wb") as stream:
            workers.append(
                subprocess.Popen(
                    command,
                    env=environment(),
                    stdout=stream,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    pids = {worker.pid: worker for worker in workers}
    killed_id = None

    def a_worker_is_mid_trial() -> bool:
        """A trial with a finished checkpoint before the last, run by one of our workers
        (its pid is in the trial workdir's lock note)."""
        nonlocal killed_id
        for trial_id in all_trials:
            directory = trial_dir(workdir, trial_id)
            steps = checkpoint_steps(directory / "checkpoints" / "latest")
            if not steps or max(steps) >= NUM_STEPS:
                continue
            with contextlib.suppress(OSError, ValueError):
                if status(directory)["status"] != "running":
                    continue
                pid = json.loads((directory / ".lock").read_text())["pid"]
                if pid in pids:
                    killed_id = trial_id
                    return True
        return False

    try:
        deadline = time.monotonic() + TIMEOUT
        while not a_worker_is_mid_trial():
            for worker, log in zip(workers, logs, strict=True):
                if worker.poll() is not None:
                    pytest.fail(f"worker exited ({worker.returncode}):\n{log.read_text()[-3000:]}")
            assert time.monotonic() < deadline, "no worker was seen mid-trial"
            time.sleep(0.01)
        directory = trial_dir(workdir, killed_id)
        victim = pids[json.loads((directory / ".lock").read_text())["pid"]]
        kill_group(victim)
        survivor = next(worker for worker in workers if worker is not victim)
        at_kill = checkpoint_steps(directory / "checkpoints" / "latest")
        assert at_kill and max(at_kill) < NUM_STEPS
        assert status(directory)["status"] == "running"  # killed inside the trial
        log = logs[workers.index(survivor)]
        assert survivor.wait(timeout=TIMEOUT) == 0, log.read_text()[-3000:]
    finally:
        for worker in workers:
            kill_group(worker)
    # The survivor took the killed trial over from its last checkpoint.
    assert first_step(log.read_text(errors="replace"), killed_id) == max(at_kill)

    study = optuna.load_study(study_name="attn-sweep", storage=postgres_url)
    states = counted_states(study)
    assert sorted(states) == sorted(all_trials)
    for trial_id, trial_states in states.items():
        assert Counter(trial_states)[TrialState.COMPLETE] == 1, (trial_id, trial_states)
        assert trial_states[-1] == TrialState.COMPLETE
    # The killed worker's attempt failed as stale (its pid was gone), then ran again.
    assert states[killed_id] == [TrialState.FAIL, TrialState.COMPLETE]
    lines = sweep_lines(workdir)
    assert sorted(line["id"] for line in lines) == sorted(all_trials)
    assert {line["status"] for line in lines} == {"done"}
    reference = alone(all_trials[killed_id])
    assert_close_params(trial_dir(workdir, killed_id), reference)
    assert logged_steps(trial_dir(workdir, killed_id)) == logged_steps(reference)


# --- 5. --print-commands -------------------------------------------------------------------------


@pytest.mark.slow
def test_printed_commands_run_the_sweeps_trials(tmp_path, swept):
    workdir = tmp_path / "sweep"
    printed = run(sweep_command(workdir, "--print-commands"))
    assert printed.returncode == 0, printed.stderr[-3000:]
    lines = printed.stdout.splitlines()
    ids = sorted(t.id for t in trials())
    assert len(lines) == len(ids)
    argvs = [shlex.split(line) for line in lines]
    assert all(argv[:3] == ["attn", "run", SPEC] for argv in argvs)
    assert sorted(Path(argv[4]).name for argv in argvs) == ids
    assert not workdir.exists()  # printing runs nothing
    # One of them, run by hand as a scheduler would, trains what the sweep's trial trained.
    argv = argvs[-1]
    result = run(attn_command(*argv[1:]))
    assert result.returncode == 0, result.stderr[-3000:]
    trial_id = Path(argv[4]).name
    assert Path(argv[4]) == trial_dir(workdir, trial_id)
    assert_close_params(trial_dir(workdir, trial_id), trial_dir(swept, trial_id))
    assert logged_steps(trial_dir(workdir, trial_id)) == logged_steps(trial_dir(swept, trial_id))


# --- 6. Bad input fails before anything runs -----------------------------------------------------


@pytest.mark.parametrize(
    "case, expected",
    [
        ("bad_key", "optim.learnin_rate"),
        ("search_without_trials", "--search and --trials go together"),
        ("zero_per_program", "--max-trials-per-program must be >= 1, got 0"),
    ],
)
def test_bad_input_fails_with_status_2_before_anything_runs(tmp_path, capsys, case, expected):
    workdir = tmp_path / "sweep"
    spec, extra = SPEC, []
    if case == "bad_key":
        # A sweep() key that the config does not have, next to one it has.
        axes = {"optim.learning_rate": [1e-3, 3e-3], "optim.learnin_rate": [1.0]}
        spec = f"{sweep_experiment(tmp_path, axes)}:smoke"
    elif case == "search_without_trials":
        extra = ["--search", "tpe"]
    else:
        extra = ["--max-trials-per-program", "0"]
    code = cli.main(["sweep", spec, "--workdir", str(workdir), *ARGUMENTS, *extra])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("attn sweep: error: ") and expected in line, line
    assert not workdir.exists()
