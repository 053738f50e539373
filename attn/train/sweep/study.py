"""Many workers share one sweep through an Optuna study: the study is the queue.

Every worker runs the same ``attn sweep`` command. It opens the study (:func:`open_study`: a
journal file ``W/optuna.journal`` by default, a PostgreSQL URL for many machines), enqueues the
trials it enumerated (:func:`enqueue`: ids already in the study are skipped, so re-running or
adding trials only adds), then takes waiting trials (:func:`claim`: Optuna's ``ask`` pops each
at most once, atomically in the storage), runs them and records the outcome (:func:`finish`).
With ``--search tpe`` Optuna's sampler proposes trials instead (:class:`Search`), and
:func:`report` feeds eval values to a median pruner.

A claimed trial's heartbeat is recorded every ``heartbeat_interval`` seconds. A RUNNING trial
whose heartbeat is older than ``grace_period``, or whose worker process is gone from this
machine, is failed by the next :func:`claim` of any worker and queued again under the same attn
id, as is an interrupted one; a trial that failed by itself is queued again up to
``max_retries`` times per id.

Trials carry their attn identity in user attributes: ``attn_id``, ``name``, ``overrides``
(config texts, see :func:`config_text`), ``queued`` (created by :func:`enqueue` or a retry, not
proposed by the sampler), ``failed`` (failed by itself: uses a retry) and ``skipped`` (a
duplicate or surplus trial given up unrun).
``--shard i/n`` (:func:`shard`) and ``--print-commands`` (:func:`command_lines`) split a sweep
without a study, for Slurm arrays and other schedulers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import shlex
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import optuna
import sqlalchemy.exc
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from attn.train.config import _parse_value
from attn.train.sweep.space import Choice, Distribution, LogUniform, Uniform, display_name, trial_id

if TYPE_CHECKING:
    from attn.train.sweep.trials import Trial

__all__ = [
    "Claimed",
    "Search",
    "batches",
    "claim",
    "command_lines",
    "config_text",
    "enqueue",
    "finish",
    "open_study",
    "optuna_distribution",
    "parse_shard",
    "report",
    "run_arguments",
    "shard",
]

_log = logging.getLogger(__name__)

# Trial user attributes.
ATTN_ID = "attn_id"
NAME = "name"
OVERRIDES = "overrides"
QUEUED = "queued"
SKIPPED = "skipped"
FAILED = "failed"
WORKER = "worker"
# Study user attribute: the retry limit of the latest worker that opened the study.
MAX_RETRIES = "max_retries"
# Trial system attribute of the journal storage's heartbeat (epoch seconds).
HEARTBEAT = "attn:heartbeat"

State = Literal["complete", "fail", "pruned", "interrupted"]


# --- Storage ------------------------------------------------------------------------------------


def _machine() -> str | None:
    """This kernel boot and PID namespace, or None off Linux: process ids only compare within
    one (two containers sharing a hostname are different machines here)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


_MACHINE = _machine()


def _exited_here(trial: FrozenTrial) -> bool:
    """Whether the trial's worker ran on this machine and its process is gone. A reused pid
    reads as alive: the trial then waits for its grace period, never runs twice."""
    worker = trial.user_attrs.get(WORKER)
    if _MACHINE is None or not worker or worker["machine"] != _MACHINE:
        return False
    try:
        os.kill(worker["pid"], 0)  # signal 0 only checks that the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, under another user
        return False
    return False


class _JournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with the heartbeat interface its RDB storage has, so
    ``optuna.storages.fail_stale_trials`` and the stale-trial callback work on both. Heartbeats
    are journal entries with the worker's clock: the machines sharing a journal on NFS need
    clocks closer than the grace period."""

    def __init__(self, path: Path, heartbeat_interval: int, grace_period: int) -> None:
        # The open lock works across processes and on NFSv3+; a lock left by a killed worker
        # is broken after Optuna's default 30 s.
        super().__init__(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
        self._heartbeat_interval = heartbeat_interval
        self._grace_period = grace_period

    def record_heartbeat(self, trial_id: int) -> None:
        # Another worker may have failed the trial as stale meanwhile; finish() will say so.
        with contextlib.suppress(UpdateFinishedTrialError):
            self.set_trial_system_attr(trial_id, HEARTBEAT, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        return [
            trial._trial_id
            for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
            if _exited_here(trial)
            or now - trial.system_attrs.get(HEARTBEAT, trial.datetime_start.timestamp())
            > self._grace_period
        ]

    def get_heartbeat_interval(self) -> int:
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Any:
        return _retry


class _RDBStorage(RDBStorage):
    """Optuna's RDB storage (heartbeats on the database's clock), where a trial whose worker
    process is gone from this machine is stale at once."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = set(super()._get_stale_trial_ids(study_id))
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return sorted(stale | {trial._trial_id for trial in running if _exited_here(trial)})


def _rdb_storage(url: str, heartbeat_interval: int, grace_period: int) -> RDBStorage:
    def connect() -> RDBStorage:
        with warnings.catch_warnings():
            # Optuna calls its heartbeat arguments experimental; they are what we rely on.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return _RDBStorage(
                url,
                engine_kwargs={"pool_pre_ping": True},  # connections idle for a whole trial
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=_retry,
            )

    # Workers starting together on a fresh database race to create Optuna's tables
    # (SQLAlchemy checks, then creates); the losers, told of a duplicate row or table
    # (PostgreSQL's DuplicateTable is a ProgrammingError), find them on a retry.
    for _ in range(2):
        with contextlib.suppress(sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            return connect()
        time.sleep(1.0)
    return connect()


def open_study(
    workdir: Path,
    storage: str | None = None,
    name: str = "attn-sweep",
    *,
    mode: Literal["max", "min"] = "max",
    sampler: Literal["tpe"] | None = None,
    seed: int | None = None,
    max_retries: int = 0,
    heartbeat_interval: int = 30,
    grace_period: int = 120,
) -> optuna.Study:
    """The study ``name`` in ``storage``, created on first use.

    ``storage``: None for the journal file ``workdir/optuna.journal`` (one machine, or machines
    sharing ``workdir`` on NFS), a URL such as ``postgresql://user@host/db`` (any SQLAlchemy
    URL) for many machines, or another journal file's path. ``mode`` is ``train.best_mode``.
    ``sampler="tpe"`` lets Optuna's TPE sampler propose trials (:class:`Search`), pruned by a
    median rule; its ``seed`` makes one worker's proposals reproducible (leave it None for many
    workers: equal seeds propose equal trials, which run once). ``max_retries`` applies
    study-wide from now on (the latest worker to open the study sets it). A claimed trial
    records a heartbeat every ``heartbeat_interval`` seconds; after ``grace_period`` seconds
    without one it is stale and queued again.
    """
    if sampler not in (None, "tpe"):
        raise ValueError(f"unknown search {sampler!r}; supported: tpe")
    if mode not in ("max", "min"):
        raise ValueError(f"mode is train.best_mode, max or min; got {mode!r}")
    if max_retries < 0 or heartbeat_interval < 1 or grace_period <= heartbeat_interval:
        raise ValueError(
            "need max_retries >= 0, heartbeat_interval >= 1 and grace_period > heartbeat_interval"
        )
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    storage = storage or str(workdir / "optuna.journal")
    if "://" in storage:
        backend = _rdb_storage(storage, heartbeat_interval, grace_period)
    else:
        backend = _JournalStorage(Path(storage), heartbeat_interval, grace_period)
    direction = "maximize" if mode == "max" else "minimize"
    study = optuna.create_study(
        storage=backend,
        study_name=name,
        direction=direction,
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed) if sampler else None,
        # The median rule compares a trial with the completed ones at the same eval step: the
        # trials of one search evaluate at the same steps, so it needs no rung sizes tuned to
        # num_steps (successive halving does), and it waits for 5 completed trials, which
        # suits packs of vmapped trials that start together.
        pruner=optuna.pruners.MedianPruner() if sampler else optuna.pruners.NopPruner(),
    )
    if study.direction.name.lower() != direction:
        raise ValueError(
            f"study {name!r} in {storage} was created to {study.direction.name.lower()},"
            f" not {direction} (train.best_mode={mode}); use another --storage or study name"
        )
    study.set_user_attr(MAX_RETRIES, max_retries)
    return study


def _storage(study: optuna.Study) -> Any:
    # The storage behind a study is not public in Optuna; its own fail_stale_trials reads it
    # the same way. Heartbeats need it.
    return study._storage


# --- Values on the command line and in the study ------------------------------------------------


def config_text(value: Any) -> str:
    """Text that ``--config.KEY=TEXT`` parses back to exactly ``value`` (a Python literal, or a
    bare word for a string that is no literal); raises ``ValueError`` for values without one
    (NaN, objects)."""
    if isinstance(value, np.generic):
        value = value.item()
    candidates = [value] if isinstance(value, str) else []
    candidates.append(repr(value))
    if isinstance(value, float) and math.isinf(value):
        candidates.append("1e999" if value > 0 else "-1e999")
    for text in candidates:
        parsed = _parse_value(text)
        if type(parsed) is type(value) and parsed == value:
            return text
    raise ValueError(f"{value!r} cannot be written as a --config value")


def _encode(overrides: Mapping[str, Any]) -> dict[str, str]:
    # Study attributes are JSON: tuples would come back as lists, so values travel as texts.
    return {key: config_text(value) for key, value in overrides.items()}


def _decode(texts: Mapping[str, str]) -> dict[str, Any]:
    return {key: _parse_value(text) for key, text in texts.items()}


# --- Search spaces ------------------------------------------------------------------------------


def optuna_distribution(distribution: Distribution) -> BaseDistribution:
    """The Optuna distribution of a :mod:`~attn.train.sweep.space` distribution."""
    if isinstance(distribution, LogUniform):
        return FloatDistribution(distribution.low, distribution.high, log=True)
    if isinstance(distribution, Uniform):
        return FloatDistribution(distribution.low, distribution.high)
    if isinstance(distribution, Choice):
        values = tuple(v.item() if isinstance(v, np.generic) else v for v in distribution.values)
        if not all(v is None or isinstance(v, bool | int | float | str) for v in values):
            raise ValueError(
                f"a searched choice takes numbers, strings, booleans or None, got {values!r}; "
                "sweep other values with grid()"
            )
        return CategoricalDistribution(values)
    raise TypeError(f"not a sweep distribution: {distribution!r}")


@dataclasses.dataclass(frozen=True)
class Search:
    """``--search tpe --trials N``: ``n`` trials proposed by the study's sampler over ``space``
    (``sweep(arg).distributions`` when ``sweep`` returns :func:`~attn.train.sweep.space.random`
    draws: key -> distribution, or a plain value that every trial takes)."""

    space: Mapping[str, Any]
    n: int

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"--trials must be positive, got {self.n}")
        if not self.distributions:
            raise ValueError("a search needs at least one uniform, loguniform or choice")

    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        return {
            key: optuna_distribution(value)
            for key, value in self.space.items()
            if isinstance(value, Distribution)
        }

    @property
    def fixed(self) -> dict[str, Any]:
        return {k: v for k, v in self.space.items() if not isinstance(v, Distribution)}


# --- The queue ----------------------------------------------------------------------------------


def _attempts(trials: Sequence[FrozenTrial], attn_id: str) -> list[FrozenTrial]:
    """The trials of ``attn_id`` that count: not given up as duplicates or surplus."""
    return [
        trial
        for trial in trials
        if trial.user_attrs.get(ATTN_ID) == attn_id and SKIPPED not in trial.user_attrs
    ]


def _queue(study: optuna.Study, attn_id: str, name: str, overrides: Mapping[str, str], params):
    study.enqueue_trial(
        params,
        user_attrs={ATTN_ID: attn_id, NAME: name, OVERRIDES: dict(overrides), QUEUED: True},
    )


def _retry(study: optuna.Study, failed: FrozenTrial) -> bool:
    """Queue ``failed``'s attn id again unless it is done, queued or running elsewhere, or has
    failed by itself more than the study's ``max_retries`` times (stale and interrupted runs
    do not count: their worker stopped, not the trial). The stale-trial callback of both
    storages."""
    attn_id = failed.user_attrs.get(ATTN_ID)
    if attn_id is None or SKIPPED in failed.user_attrs:
        return False
    trials = _attempts(study.get_trials(deepcopy=False), attn_id)
    if any(trial.state != TrialState.FAIL for trial in trials):
        return False
    failures = sum(bool(trial.user_attrs.get(FAILED)) for trial in trials)
    if failures > study.user_attrs.get(MAX_RETRIES, 0):
        return False
    user = failed.user_attrs
    _queue(study, attn_id, user[NAME], user[OVERRIDES], failed.params)
    return True


def enqueue(study: optuna.Study, trials: Sequence[Trial]) -> int:
    """Queue each trial whose id the study does not hold yet, and queue again the ids whose
    every attempt failed while retries are left (a worker killed between failing a trial and
    queueing its retry, or a raised ``max_retries``). Returns how many trials were queued.

    Two workers enqueueing at once may queue an id twice; :func:`claim` runs only one."""
    held: dict[str, list[FrozenTrial]] = {}
    for trial in study.get_trials(deepcopy=False):
        if ATTN_ID in trial.user_attrs and SKIPPED not in trial.user_attrs:
            held.setdefault(trial.user_attrs[ATTN_ID], []).append(trial)
    added = 0
    for trial in trials:
        if trial.id not in held:
            _queue(study, trial.id, trial.name, _encode(trial.overrides), {})
            added += 1
        elif all(attempt.state == TrialState.FAIL for attempt in held[trial.id]):
            added += _retry(study, held[trial.id][-1])
    return added


class _Heartbeat:
    """Records a claimed trial's heartbeat now and every interval from a daemon thread (a
    worker that dies without :func:`finish` must not hang on it) until stopped."""

    def __init__(self, storage: Any, trial_id: int) -> None:
        self._stop = threading.Event()
        # Recorded before claim() returns: the RDB storage never finds a trial without one stale.
        storage.record_heartbeat(trial_id)
        interval = storage.get_heartbeat_interval()
        self._thread = threading.Thread(
            target=self._beat, args=(storage, trial_id, interval), daemon=True
        )
        self._thread.start()

    def _beat(self, storage: Any, trial_id: int, interval: int) -> None:
        while not self._stop.wait(interval):
            try:
                storage.record_heartbeat(trial_id)
            except Exception as error:  # a lost connection must not end the heartbeats
                _log.warning("heartbeat of trial %d failed: %s", trial_id, error)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclasses.dataclass(eq=False)
class Claimed:
    """A trial this worker runs: its attn id, display name and overrides, and the Optuna
    trial (``trial.number`` names it in the study)."""

    attn_id: str
    name: str
    overrides: dict[str, Any]
    trial: optuna.Trial
    _heartbeat: _Heartbeat = dataclasses.field(repr=False)


# Trials claimed by this process and not finished: RUNNING trials elsewhere are the others.
_held: set[tuple[str, int]] = set()


def _fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # runs _retry on each trial it failed


def _ask(study: optuna.Study, search: Search | None) -> optuna.Trial:
    with warnings.catch_warnings():
        # Optuna warns that heartbeats are meant for study.optimize; claim() beats itself.
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        return study.ask(search.distributions if search else None)


def _skip(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    trial.set_user_attr(SKIPPED, reason)
    study.tell(trial, state=TrialState.PRUNED)


def _duplicate_of(number: int, attempts: Sequence[FrozenTrial]) -> FrozenTrial | None:
    """The trial of the same id that runs instead of trial ``number``: a finished one, or the
    lowest-numbered one waiting or running. Every worker applies the same rule, so of two
    copies enqueued at once exactly the lower-numbered one runs."""
    for other in attempts:
        if other.number == number:
            continue
        if other.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
            other.state in (TrialState.WAITING, TrialState.RUNNING) and other.number < number
        ):
            return other
    return None


def claim(study: optuna.Study, limit: int, *, search: Search | None = None) -> list[Claimed]:
    """Up to ``limit`` trials for this worker: waiting ones first (enqueued, retried, or stale
    ones queued again), then, with ``search``, new proposals of the sampler until the study
    holds ``search.n`` of them. Stale RUNNING trials are failed (and queued again) first.
    Returns [] when nothing is left to take now (see :func:`batches` to wait for others)."""
    _fail_stale(study)
    storage = _storage(study)
    claimed: list[Claimed] = []
    while len(claimed) < limit:
        trials = study.get_trials(deepcopy=False)
        waiting = any(trial.state == TrialState.WAITING for trial in trials)
        if not waiting and (search is None or _proposed(trials, len(trials)) >= search.n):
            break
        trial = _ask(study, search)
        if ATTN_ID not in trial.user_attrs:  # a new trial: nothing was waiting any more
            earlier = _proposed(study.get_trials(deepcopy=False), trial.number)
            if search is None or earlier >= search.n:
                # Another worker took the last waiting trial or proposal between our read and ask.
                _skip(study, trial, "nothing left to take")
                continue
            overrides = {**search.fixed, **trial.params}
            attn_id, name = trial_id(overrides), display_name(overrides)
            for key, value in ((ATTN_ID, attn_id), (NAME, name), (OVERRIDES, _encode(overrides))):
                trial.set_user_attr(key, value)
        attempts = _attempts(study.get_trials(deepcopy=False), trial.user_attrs[ATTN_ID])
        other = _duplicate_of(trial.number, attempts)
        if other is not None:
            _skip(study, trial, f"duplicate of trial {other.number}")
            continue
        trial.set_user_attr(WORKER, {"machine": _MACHINE, "pid": os.getpid()})
        heartbeat = _Heartbeat(storage, trial._trial_id)
        _held.add((study.study_name, trial.number))
        user = trial.user_attrs
        claimed.append(
            Claimed(user[ATTN_ID], user[NAME], _decode(user[OVERRIDES]), trial, heartbeat)
        )
    return claimed


def _proposed(trials: Sequence[FrozenTrial], before: int) -> int:
    """How many trials numbered below ``before`` the sampler proposed (not queued)."""
    return sum(QUEUED not in trial.user_attrs and trial.number < before for trial in trials)


def batches(
    study: optuna.Study, limit: int, *, search: Search | None = None
) -> Iterator[list[Claimed]]:
    """:func:`claim` ``limit`` trials at a time until no trial is waiting or running anywhere:
    while other workers still run trials this one waits (one heartbeat interval between looks),
    so that it takes over those whose worker dies. The caller finishes each batch before
    asking for the next."""
    interval = _storage(study).get_heartbeat_interval()
    while True:
        batch = claim(study, limit, search=search)
        if batch:
            yield batch
            continue
        running = [
            trial.number
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if (study.study_name, trial.number) not in _held
        ]
        if not running:
            return
        _log.info("waiting for trials %s running on other workers", running)
        time.sleep(interval)


def report(claimed: Claimed, step: int, value: float) -> bool:
    """Record an eval value of ``claimed`` at ``step``; True when the pruner says stop (never
    without ``--search``), or when another worker declared the trial stale and queued it again
    (:func:`finish` then records nothing)."""
    try:
        claimed.trial.report(value, step)
    except UpdateFinishedTrialError:
        return True
    return claimed.trial.should_prune()


def finish(
    study: optuna.Study, claimed: Claimed, *, value: float | None = None, state: State = "complete"
) -> bool:
    """Record how ``claimed`` ended and stop its heartbeat.

    ``complete`` needs its ``value`` (``train.best_metric``; NaN records a failure).
    ``fail`` queues the id again while retries are left; ``interrupted`` (Ctrl-C) queues it
    again without using a retry; ``pruned`` is final. Returns False, with a warning, when the
    trial was already failed as stale by another worker (and queued again)."""
    claimed._heartbeat.stop()
    _held.discard((study.study_name, claimed.trial.number))
    if state not in ("complete", "fail", "pruned", "interrupted"):
        raise ValueError(f"unknown state {state!r}; use complete, fail, pruned or interrupted")
    if state == "complete" and value is None:
        raise ValueError("a complete trial needs its value")
    failed = state == "fail" or (state == "complete" and not math.isfinite(value))
    if state == "complete" and not failed:
        optuna_state = TrialState.COMPLETE
    else:
        optuna_state = TrialState.PRUNED if state == "pruned" else TrialState.FAIL
        value = None
    storage = _storage(study)
    try:
        if storage.get_trial(claimed.trial._trial_id).state.is_finished():
            raise UpdateFinishedTrialError
        if failed:
            claimed.trial.set_user_attr(FAILED, True)
        frozen = study.tell(claimed.trial, value, optuna_state, skip_if_finished=True)
    except UpdateFinishedTrialError:
        warnings.warn(
            f"trial {claimed.name} ({claimed.attn_id}) was declared stale and queued again "
            f"while this worker ran it; its {state} result is not recorded",
            stacklevel=2,
        )
        return False
    if optuna_state == TrialState.FAIL:
        _retry(study, frozen)
    return True


# --- Without a study ----------------------------------------------------------------------------


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (0 <= i < n) -> ``(i, n)``."""
    index, slash, count = text.partition("/")
    try:
        result = int(index), int(count)
    except ValueError:
        result = None
    if not slash or result is None or not 0 <= result[0] < result[1]:
        raise ValueError(f"--shard takes i/n with 0 <= i < n, got {text!r}")
    return result


def shard(trials: Sequence[Trial], index: int, count: int) -> list[Trial]:
    """Shard ``index`` of ``count``: every ``count``-th trial in id order from the ``index``-th.
    Every machine computes the same split from the same trials, and the shards differ in size by
    at most one (one trial per shard when ``count`` is the number of trials)."""
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: need 0 <= index < count")
    return sorted(trials, key=lambda trial: trial.id)[index::count]


def run_arguments(
    spec: str, workdir: Path, trial: Trial, overrides: Sequence[tuple[str, str]] = ()
) -> list[str]:
    """The arguments after ``attn`` that run ``trial`` alone in ``workdir/trials/<id>``: the
    command line's ``overrides`` (text as given) and then the trial's."""
    return [
        "run",
        spec,
        "--workdir",
        str(Path(workdir) / "trials" / trial.id),
        *(f"--config.{key}={text}" for key, text in overrides),
        *(f"--config.{key}={text}" for key, text in _encode(trial.overrides).items()),
    ]


def command_lines(
    spec: str, workdir: Path, trials: Sequence[Trial], overrides: Sequence[tuple[str, str]] = ()
) -> list[str]:
    """One shell-quoted ``attn run`` line per trial (see :func:`run_arguments`)."""
    return [
        shlex.join(["attn", *run_arguments(spec, workdir, trial, overrides)]) for trial in trials
    ]
