"""The sweep's Optuna study: enqueue, claim, finish, retries, stale trials of dead or hung
workers, two workers on a journal file and on a PostgreSQL server, TPE search with pruning,
shards and printed commands."""

import math
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from optuna.trial import TrialState

from attn.cli import _split_overrides
from attn.train import config as config_lib
from attn.train.sweep import study as sweep_study
from attn.train.sweep.space import choice, display_name, grid, loguniform, random, trial_id, uniform
from attn.train.sweep.trials import Trial, trial_config

from . import postgres
from .helpers import ENVIRONMENT, REVERSE, ROOT

# Fast heartbeats so that stale trials show within seconds.
FAST = {"heartbeat_interval": 1, "grace_period": 3}


def make_trials(overrides_list):
    # The study only reads ids, names and overrides: no config needed.
    return [Trial(trial_id(o), display_name(o), o, None, None) for o in overrides_list]


GRID = make_trials(
    grid(**{"optim.learning_rate": [1e-3, 3e-4], "train.seed": [0, 1], "model.shape": [(2, 3)]})
)


def states(study):
    """attn id -> states of its trials that count, in trial order."""
    result = {}
    for trial in study.get_trials():
        if sweep_study.SKIPPED not in trial.user_attrs:
            result.setdefault(trial.user_attrs["attn_id"], []).append(trial.state)
    return result


def test_enqueue_only_adds(tmp_path):
    study = sweep_study.open_study(tmp_path)
    assert sweep_study.enqueue(study, GRID[:3]) == 3
    assert sweep_study.enqueue(study, GRID[:3]) == 0
    assert sweep_study.enqueue(study, GRID) == 1
    assert (tmp_path / "optuna.journal").is_file()
    # Another worker opening the same workdir sees the same queue.
    again = sweep_study.open_study(tmp_path)
    assert sweep_study.enqueue(again, GRID) == 0
    assert sorted(states(again)) == sorted(t.id for t in GRID)


def test_claim_until_empty_then_finish(tmp_path):
    study = sweep_study.open_study(tmp_path, **FAST)
    sweep_study.enqueue(study, GRID)
    first = sweep_study.claim(study, 3)
    second = sweep_study.claim(study, 3)
    assert [len(first), len(second)] == [3, 1]
    assert sweep_study.claim(study, 3) == []
    claimed = first + second
    assert sorted(c.attn_id for c in claimed) == sorted(t.id for t in GRID)
    by_id = {t.id: t for t in GRID}
    for c in claimed:
        # Overrides come back as the same Python values (the tuple too, not a JSON list).
        assert c.overrides == by_id[c.attn_id].overrides
        assert type(c.overrides["model.shape"]) is tuple
        assert c.name == by_id[c.attn_id].name
    for value, c in enumerate(claimed):
        assert sweep_study.finish(study, c, value=float(value))
    assert {i: s for i, s in states(study).items()} == {t.id: [TrialState.COMPLETE] for t in GRID}
    assert sorted(t.value for t in study.get_trials()) == [0.0, 1.0, 2.0, 3.0]
    # Re-running the sweep enqueues nothing and finds nothing to do.
    assert sweep_study.enqueue(study, GRID) == 0
    assert sweep_study.claim(study, 3) == []


def test_failures_are_retried_up_to_max_retries(tmp_path):
    study = sweep_study.open_study(tmp_path, max_retries=2, **FAST)
    sweep_study.enqueue(study, GRID[:1])
    attn_id = GRID[0].id
    # An interrupted run (Ctrl-C) is queued again without using a retry.
    (claimed,) = sweep_study.claim(study, 2)
    assert sweep_study.finish(study, claimed, state="interrupted")
    for _ in range(3):  # the first attempt and two retries, each with the same attn id
        (claimed,) = sweep_study.claim(study, 2)
        assert claimed.attn_id == attn_id
        sweep_study.finish(study, claimed, state="fail")
    assert sweep_study.claim(study, 2) == []
    assert states(study)[attn_id] == [TrialState.FAIL] * 4
    # Re-running with the same limit leaves it failed; a higher limit retries it once more.
    assert sweep_study.enqueue(study, GRID[:1]) == 0
    study = sweep_study.open_study(tmp_path, max_retries=3, **FAST)
    assert sweep_study.enqueue(study, GRID[:1]) == 1
    (claimed,) = sweep_study.claim(study, 2)
    # A NaN metric is a failure too.
    sweep_study.finish(study, claimed, value=math.nan)
    assert states(study)[attn_id] == [TrialState.FAIL] * 5
    assert sweep_study.claim(study, 2) == []


def test_ids_enqueued_twice_at_once_run_once(tmp_path, monkeypatch):
    first = sweep_study.open_study(tmp_path)
    second = sweep_study.open_study(tmp_path)
    sweep_study.enqueue(first, GRID)
    # The second worker read the study before the first one's trials arrived.
    monkeypatch.setattr(second, "get_trials", lambda **kwargs: [])
    assert sweep_study.enqueue(second, GRID) == len(GRID)
    monkeypatch.undo()
    assert len(second.get_trials()) == 2 * len(GRID)
    ran = []
    for study in [second, first, second, first, second]:  # workers take turns
        for claimed in sweep_study.claim(study, 2):
            ran.append(claimed.attn_id)
            sweep_study.finish(study, claimed, value=1.0)
    assert sorted(ran) == sorted(t.id for t in GRID)
    skipped = [t for t in first.get_trials() if sweep_study.SKIPPED in t.user_attrs]
    assert len(skipped) == len(GRID)
    assert all(t.state == TrialState.PRUNED for t in skipped)


def test_search_proposes_inside_the_distributions_and_prunes(tmp_path):
    space = {
        "optim.learning_rate": loguniform(1e-4, 1e-1),
        "model.dropout_rate": uniform(0.0, 0.5),
        "optim.name": choice("adamw", "sgd"),
        "train.seed": 3,
    }
    draws = random(4, seed=0, **space)
    assert draws.distributions == space  # what `attn sweep --search` hands to Search
    search = sweep_study.Search(draws.distributions, n=10)
    study = sweep_study.open_study(tmp_path, mode="min", sampler="tpe", seed=0)

    def loss(overrides, step):  # a cheap objective: best at lr = 1e-2, improving with steps
        return (math.log10(overrides["optim.learning_rate"]) + 2) ** 2 + 1 / step

    seen, pruned = [], []
    while batch := sweep_study.claim(study, 3, search=search):
        for claimed in batch:
            o = claimed.overrides
            assert 1e-4 <= o["optim.learning_rate"] <= 1e-1
            assert 0.0 <= o["model.dropout_rate"] <= 0.5
            assert o["optim.name"] in ("adamw", "sgd")
            assert o["train.seed"] == 3
            assert claimed.attn_id == trial_id(o)
            seen.append(claimed.attn_id)
            for step in (1, 2, 3):
                if sweep_study.report(claimed, step, loss(o, step)):
                    pruned.append(claimed.attn_id)
                    sweep_study.finish(study, claimed, state="pruned")
                    break
            else:
                sweep_study.finish(study, claimed, value=loss(o, 3))
    assert len(seen) == 10
    assert 0 < len(pruned) < 10  # the median rule stopped some once 5 had completed
    # A trial far worse than the median of the completed ones is stopped at its first report.
    study = sweep_study.open_study(tmp_path, mode="min", sampler="tpe", seed=0)
    (late,) = sweep_study.claim(study, 1, search=sweep_study.Search(space, n=11))
    assert sweep_study.report(late, 1, 100.0)
    sweep_study.finish(study, late, state="pruned")
    assert sweep_study.claim(study, 1, search=sweep_study.Search(space, n=11)) == []
    counted = [t for t in study.get_trials() if sweep_study.SKIPPED not in t.user_attrs]
    assert len(counted) == 11
    assert sum(t.state == TrialState.PRUNED for t in counted) == len(pruned) + 1
    best = study.best_trial.user_attrs["overrides"]["optim.learning_rate"]
    assert 1e-3 < float(best) < 1e-1


def test_open_study_refuses_another_direction(tmp_path):
    sweep_study.open_study(tmp_path, mode="max")
    with pytest.raises(ValueError, match="maximize"):
        sweep_study.open_study(tmp_path, mode="min")


@pytest.mark.parametrize(
    "value",
    [3e-4, 1 / 3, 1e-300, -0.0, math.inf, -math.inf, 7, True, None, "adamw", "1e-3", "True",
     "two words", "", (2, 3), (0.5, "x"), [1, 2]],
)  # fmt: skip
def test_config_text_parses_back(value):
    text = sweep_study.config_text(value)
    parsed = config_lib._parse_value(text)
    assert type(parsed) is type(value) and parsed == value


def test_config_text_refuses_what_it_cannot_write():
    with pytest.raises(ValueError, match="cannot be written"):
        sweep_study.config_text(math.nan)


def test_command_lines_run_each_trial_with_its_config(tmp_path):
    spec = f"{REVERSE}:smoke"
    cli = [("train.num_steps", "12"), ("model.activation", "relu")]
    base = config_lib.load_config(spec)
    for key, text in cli:
        config_lib.apply_override(base, key, text)
    swept = grid(**{"optim.learning_rate": [3e-4, 1 / 3], "train.sample_prompt": ["1e-3", "a b"]})
    trials = make_trials([*swept, {"model.attention.qk_norm": True, "model.activation": "silu"}])
    lines = sweep_study.command_lines(spec, tmp_path, trials, cli)
    assert len(lines) == len(trials)
    for line, trial in zip(lines, trials, strict=True):
        argv = shlex.split(line)
        assert argv[:5] == ["attn", "run", spec, "--workdir", str(tmp_path / "trials" / trial.id)]
        parsed = config_lib.load_config(spec)
        for key, text in _split_overrides(argv[5:]):
            config_lib.apply_override(parsed, key, text)
        assert parsed.to_dict() == trial_config(base, trial.overrides).to_dict()


def test_shards_split_every_trial_once_and_evenly():
    trials = make_trials(grid(**{"optim.learning_rate": [1e-3, 3e-3, 1e-2], "train.seed": [0, 1]}))
    for count in (1, 2, 4, 6, 8):
        shards = [sweep_study.shard(trials, i, count) for i in range(count)]
        assert sorted(t.id for s in shards for t in s) == sorted(t.id for t in trials)
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
        # The same split whatever order the trials come in.
        assert shards == [sweep_study.shard(trials[::-1], i, count) for i in range(count)]
    assert sweep_study.parse_shard("3/8") == (3, 8)
    for text in ("8/8", "-1/4", "1", "a/b", "1/0"):
        with pytest.raises(ValueError, match="--shard"):
            sweep_study.parse_shard(text)


# --- Worker processes ---------------------------------------------------------------------------

# A worker of a 12-trial sweep: "runs" each trial by logging it. With a signal name, the worker
# sends it to itself in its second trial: SIGKILL (its machine must notice at once) or SIGSTOP
# (a hung worker: its heartbeats stop, the grace period runs out).
WORKER = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from attn.train.sweep import study as sweep_study
    from attn.train.sweep.space import display_name, grid, trial_id
    from attn.train.sweep.trials import Trial

    workdir, storage, log, grace, stop = sys.argv[1:]
    study = sweep_study.open_study(
        Path(workdir), storage or None, heartbeat_interval=1, grace_period=int(grace)
    )
    sweep = grid(**{"optim.learning_rate": [1e-3, 3e-3, 1e-2], "train.seed": [0, 1, 2, 3]})
    sweep_study.enqueue(study, [Trial(trial_id(o), display_name(o), o, None, None) for o in sweep])
    # Both workers are up before either claims: they take trials side by side.
    Path(f"{log}.ready.{os.getpid()}").touch()
    while len(list(Path(log).parent.glob(Path(log).name + ".ready.*"))) < 2:
        time.sleep(0.05)

    def write(line):
        with open(log, "a") as file:
            file.write(f"{line} {os.getpid()}\\n")

    count = 0
    for batch in sweep_study.batches(study, 2):
        for claimed in batch:
            write(f"start {claimed.attn_id}")
            count += 1
            if stop and count == 2:
                os.kill(os.getpid(), getattr(signal, stop))
            time.sleep(0.3)
            write(f"done {claimed.attn_id}")
            sweep_study.finish(study, claimed, value=1.0)
    """
)


def run_two_workers(tmp_path, storage, stop, grace):
    """Two workers of one sweep, the first stopping itself with ``stop``; returns the log lines
    as (event, attn id, pid) and the study."""
    log = tmp_path / "log"
    log.touch()
    environment = {**ENVIRONMENT, "PYTHONPATH": str(ROOT)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(tmp_path), storage, str(log), str(grace), signal_],
            env=environment,
        )
        for signal_ in (stop, "")
    ]
    try:
        if stop == "SIGKILL":
            # Reaped at once, as a shell reaps a worker the OOM killer ended: a zombie's pid
            # would read as alive.
            assert workers[0].wait(timeout=60) == -signal.SIGKILL
        assert workers[1].wait(timeout=90) == 0
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
    lines = [tuple(line.split()) for line in log.read_text().splitlines()]
    study = sweep_study.open_study(tmp_path, storage or None, **FAST)
    return lines, study


def stopping_pid(lines):
    """The worker that stopped: it started a trial it never finished."""
    started = {(a, pid) for event, a, pid in lines if event == "start"}
    finished = {(a, pid) for event, a, pid in lines if event == "done"}
    ((_, pid),) = started - finished
    return pid


def check_every_trial_ran_once(lines, study):
    done = Counter(a for event, a, _ in lines if event == "done")
    assert len(done) == 12 and set(done.values()) == {1}
    # The first worker stopped inside its second trial: it finished the first one, and the
    # other worker ran the second (and any other it held) after it went stale.
    first = stopping_pid(lines)
    started = [a for event, a, pid in lines if event == "start" and pid == first]
    assert len(started) == 2
    assert [a for event, a, pid in lines if event == "done" and pid == first] == started[:1]
    assert states(study)[started[1]] == [TrialState.FAIL, TrialState.COMPLETE]
    assert all(s[-1] == TrialState.COMPLETE for s in states(study).values())
    assert len(states(study)) == 12


@pytest.fixture
def postgres_url():
    with postgres.server() as url:
        yield url


@pytest.mark.slow
def test_two_workers_on_a_journal_file_one_killed(tmp_path):
    # A grace period longer than the test: the dead pid must be noticed at once.
    check_every_trial_ran_once(*run_two_workers(tmp_path, "", "SIGKILL", grace=600))


@pytest.mark.slow
def test_two_workers_on_postgresql_one_hung(tmp_path, postgres_url):
    # Stopped, not dead: its heartbeats stop and the grace period runs out.
    check_every_trial_ran_once(*run_two_workers(tmp_path, postgres_url, "SIGSTOP", grace=3))


@pytest.fixture(params=["journal", "postgresql"])
def storage(request):
    """None (the journal file in the workdir) or a PostgreSQL server's URL."""
    return request.getfixturevalue("postgres_url") if request.param == "postgresql" else None


def test_stale_trials_come_back_with_their_id(tmp_path, storage):
    """In one process: a trial whose worker pid is gone is claimable again at once, a trial
    without heartbeats after the grace period."""
    study = sweep_study.open_study(tmp_path, storage, **FAST)
    sweep_study.enqueue(study, GRID[:2])
    dead, hung = sweep_study.claim(study, 2)
    for claimed in (dead, hung):
        claimed._heartbeat.stop()  # as if the worker stopped beating
        sweep_study._held.discard((study.study_name, claimed.trial.number))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead.trial.set_user_attr(sweep_study.WORKER, {"machine": sweep_study._MACHINE, "pid": gone.pid})
    (again,) = sweep_study.claim(study, 2)
    assert again.attn_id == dead.attn_id and again.overrides == dead.overrides
    time.sleep(FAST["grace_period"] + 0.5)
    (later,) = sweep_study.claim(study, 2)
    assert later.attn_id == hung.attn_id
    with pytest.warns(UserWarning, match="declared stale"):
        assert not sweep_study.finish(study, hung, value=1.0)
    assert sweep_study.finish(study, later, value=1.0)
    assert sweep_study.finish(study, again, value=1.0)
    twice = [TrialState.FAIL, TrialState.COMPLETE]
    assert states(study) == {dead.attn_id: twice, hung.attn_id: twice}
    assert os.getpid() == hung.trial.user_attrs[sweep_study.WORKER]["pid"]


def test_workers_opening_a_fresh_database_at_once(tmp_path, postgres_url):
    # Optuna's table creation races on a fresh database (about 5 of 6 such opens fail with
    # a unique violation without the retry).
    barrier = threading.Barrier(6)

    def open_study(_):
        barrier.wait()
        return sweep_study.open_study(tmp_path, postgres_url)

    with ThreadPoolExecutor(6) as pool:
        studies = list(pool.map(open_study, range(6)))
    assert len({study._study_id for study in studies}) == 1
