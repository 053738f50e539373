"""Single trials on several accelerators at once: one ``attn run`` subprocess per device.

Trials that share no program with another run alone; with several local GPUs (or TPU chips)
they run side by side, each subprocess seeing one device (``CUDA_VISIBLE_DEVICES``, or the TPU
runtime's visible-chip variables), polled as a pool. On a CPU the runner trains them one after
another in its own process instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax

from attn.train.loop import best_record
from attn.train.sweep.status import write_status
from attn.train.sweep.study import run_arguments
from attn.train.sweep.trials import Trial
from attn.train.writer import read_metrics

__all__ = ["device_slots", "run_in_pool"]

INTERRUPTED = 130  # attn run's status after Ctrl-C (it saved a checkpoint)
_TPU_PORT = 8476  # the TPU runtime's default mesh-controller port; one more per process


def device_slots() -> list[dict[str, str]]:
    """The environment of one subprocess per local accelerator, or [] where there is one
    device or only the CPU."""
    backend, count = jax.default_backend(), jax.local_device_count()
    if count < 2:
        return []
    if backend == "gpu":
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",") if visible else [str(index) for index in range(count)]
        return [{"CUDA_VISIBLE_DEVICES": device} for device in ids[:count]]
    if backend == "tpu":  # one chip per process (TPU v4 and later: one device per chip)
        return [
            {
                "TPU_VISIBLE_CHIPS": str(index),
                "TPU_CHIPS_PER_PROCESS_BOUNDS": "1,1,1",
                "TPU_PROCESS_BOUNDS": "1,1,1",
                "TPU_MESH_CONTROLLER_ADDRESS": f"localhost:{_TPU_PORT + index}",
                "TPU_MESH_CONTROLLER_PORT": str(_TPU_PORT + index),
            }
            for index in range(count)
        ]
    return []


Finished = Callable[[Trial, str, float | None, str | None], None]


def _outcome(trial: Trial, workdir: Path, returncode: int, log: Path):
    if returncode == INTERRUPTED:
        return "interrupted", None, "interrupted"
    if returncode != 0:
        lines = log.read_text(errors="replace").strip().splitlines()
        return "failed", None, lines[-1] if lines else f"exit status {returncode}"
    train = trial.config.train
    best = best_record(
        read_metrics(workdir / "trials" / trial.id), train.best_metric, train.best_mode
    )
    if train.best_metric not in best:
        return "failed", None, f"no eval record of {train.best_metric}"
    return "done", best[train.best_metric], None


def run_in_pool(
    trials: Sequence[Trial],
    spec: str,
    command_line: Sequence[tuple[str, str]],
    workdir: Path,
    slots: Sequence[dict[str, str]],
    finished: Finished,
    poll_seconds: float = 1.0,
) -> None:
    """Run each trial as ``attn run`` in a subprocess, one per slot (its environment), until all
    ended; ``finished(trial, status, best value, error)`` is called as each ends. Its output goes
    to ``trials/<id>/run.log``. Ctrl-C is passed on (each run saves a checkpoint) and raised."""
    queue = list(trials)
    running: dict[int, tuple[subprocess.Popen, Trial, Path, float]] = {}
    try:
        while queue or running:
            for slot in range(len(slots)):
                if slot in running or not queue:
                    continue
                trial = queue.pop(0)
                directory = workdir / "trials" / trial.id
                directory.mkdir(parents=True, exist_ok=True)
                log = directory / "run.log"
                write_status(workdir, trial, "running", group=f"device {slot}", size=1)
                with log.open("w") as stream:
                    process = subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "attn",
                            *run_arguments(spec, workdir, trial, command_line),
                        ],
                        env={**os.environ, **slots[slot]},
                        stdout=stream,
                        stderr=subprocess.STDOUT,
                    )
                running[slot] = (process, trial, log, time.perf_counter())
            for slot, (process, trial, log, started) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[slot]
                status, value, error = _outcome(trial, workdir, process.returncode, log)
                write_status(
                    workdir,
                    trial,
                    status,
                    group=f"device {slot}",
                    size=1,
                    wall_seconds=time.perf_counter() - started,
                    error=error,
                )
                finished(trial, status, value, error)
            time.sleep(poll_seconds if running else 0)
    except KeyboardInterrupt:
        for process, *_ in running.values():
            process.send_signal(signal.SIGINT)
        for process, trial, _, _ in running.values():
            process.wait()
            write_status(workdir, trial, "interrupted", size=1)
        raise
