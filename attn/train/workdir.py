"""A workdir's guards: one run at a time (a lock), and resuming only under a compatible config.

``attn run`` holds an exclusive ``fcntl.flock`` on ``WORKDIR/.lock`` for the whole run. The
operating system releases it when the process ends in any way (SIGKILL included), so a killed
run never leaves a stale lock; the file keeps the holder's pid and host for the error message.
``attn eval`` and ``attn plot`` take no lock: they read finished checkpoints (orbax renames a
checkpoint into place only once it is complete) and write only PNGs with their own names.

A re-run resumes from the checkpoints, so its config must build the same arrays from the same
data: only the keys in :data:`RESUMABLE_KEYS` may differ from the saved ``config.json``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import ml_collections

from attn.train import config as config_lib
from attn.train import distributed

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are unguarded.
    fcntl = None

__all__ = [
    "CONFIG_FILE",
    "LOCK_FILE",
    "RESUMABLE_KEYS",
    "RunLock",
    "WorkdirLock",
    "changed_keys",
    "check_resumable",
    "read_config",
    "require_directory",
]

CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"

# Keys a resumed run may change: run length, logging and evaluation settings, and where the
# (deterministic) data is read from or how it is batched for evaluation. None of them changes an
# array's shape or a training batch; the state after step i still depends only on the
# checkpoint. accumulation_steps splits the same batch differently (the same mean up to
# rounding), so a run can move to a machine with less memory. The mesh places the same arrays
# differently (orbax restores a checkpoint onto any layout), so a run can move to other
# devices. The schedule's length keys
# (optax's decay_steps / transition_steps) move with train.num_steps when a run is extended.
RESUMABLE_KEYS = frozenset(
    {
        "train.num_steps",
        "train.log_every",
        "train.eval_every",
        "train.checkpoint_every",
        "train.max_to_keep",
        "train.eval_batches",
        "train.plot_examples",
        "train.sample_tokens",
        "train.sample_prompt",
        "train.accumulation_steps",
        "train.mesh.data",
        "train.mesh.fsdp",
        "optim.schedule_kwargs.decay_steps",
        "optim.schedule_kwargs.transition_steps",
        "data.data_dir",
        "data.eval_batch_size",
        "data.cache",
    }
)


def require_directory(workdir: Path, *, create: bool) -> None:
    """ValueError naming ``workdir`` unless it is a directory; with ``create`` (for a run) it is
    made if missing and must be writable."""
    if workdir.exists() and not workdir.is_dir():
        raise ValueError(f"workdir {workdir} is a file, not a directory")
    if not create:
        if not workdir.is_dir():
            raise ValueError(f"workdir {workdir} does not exist; train it first with `attn run`")
        return
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot create workdir {workdir}: {error.strerror}") from None
    # Checked up front: files left inside by an earlier run may still be writable, and the run
    # would otherwise fail later, half way through writing.
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write to workdir {workdir}: Permission denied")


class WorkdirLock:
    """Exclusive lock on ``workdir/.lock`` while a run writes the workdir.

    Entering fails at once with a ValueError naming the holder's pid and host if another run
    holds it (no waiting: two runs would interleave logs and checkpoints).
    """

    def __init__(self, workdir: Path):
        self.path = Path(workdir) / LOCK_FILE
        self._stream = None

    def __enter__(self) -> WorkdirLock:
        try:
            # "a+": never truncate before the lock is ours, the holder's note must survive.
            stream = self.path.open("a+")
        except OSError as error:
            raise ValueError(
                f"cannot write to workdir {self.path.parent}: {error.strerror}"
            ) from None
        if fcntl is not None:
            try:
                fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                stream.close()
                if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                raise ValueError(
                    f"workdir {self.path.parent} is in use by {_holder(self.path)}; wait for "
                    "that run to end or choose another --workdir"
                ) from None
        stream.seek(0)
        stream.truncate()
        note = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.ctime()}
        stream.write(json.dumps(note) + "\n")
        stream.flush()
        self._stream = stream
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Closing releases the flock. The file stays: were it deleted, a run that had opened
        # it just before could lock the orphaned file while another locks a new one.
        if self._stream is not None:
            self._stream.close()
            self._stream = None


class RunLock:
    """The workdir lock of a run over all its processes: process 0 holds a
    :class:`WorkdirLock`, and every process learns whether it got it, so that all of them stop
    together (rather than wait on process 0 forever) if another run holds the workdir."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> RunLock:
        error = None
        if distributed.is_primary():
            try:
                self._stack.enter_context(WorkdirLock(self.workdir))
            except ValueError as failure:
                error = failure
        if not distributed.agree(error is None):
            self._stack.close()
            raise error or ValueError(
                f"workdir {self.workdir} is in use by another run (process 0 says more)"
            )
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()


def _holder(path: Path) -> str:
    try:
        note = json.loads(path.read_text())
        return f"pid {note['pid']} on host {note['host']} (since {note['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (it has not written its pid yet)"


def read_config(path: Path) -> ml_collections.ConfigDict:
    """The config saved in ``path``; a ValueError naming the file if it is missing or broken."""
    if not path.is_file():
        raise ValueError(f"{path.parent} has no {path.name}; train it first with `attn run`")
    return config_lib.from_json(path)


def _plain(config: ml_collections.ConfigDict) -> dict[str, Any]:
    # The JSON round trip config.json makes (tuples become lists), so like compares with like.
    return json.loads(json.dumps(config.to_dict(), default=str))


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old, new)}`` for every leaf that differs (a missing side is None)."""
    before, after = _flatten(old), _flatten(new)
    return {
        key: (before.get(key), after.get(key))
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key)
    }


def check_resumable(config: ml_collections.ConfigDict, path: Path) -> None:
    """ValueError naming the keys if ``config`` changes more than :data:`RESUMABLE_KEYS` from
    the config saved in ``path`` (nothing to check if there is none)."""
    if not path.exists():
        return
    saved = read_config(path)
    refused = {
        key: values
        for key, values in changed_keys(_plain(saved), _plain(config)).items()
        if key not in RESUMABLE_KEYS
    }
    if refused:
        changes = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in refused.items())
        raise ValueError(
            f"{path.parent} was trained with another config ({changes}). Resuming needs the same "
            "model, data and optimizer; use a new --workdir. Only run-length and logging keys "
            f"may change on resume: {', '.join(sorted(RESUMABLE_KEYS))}"
        )
