"""Multi-process data parallelism for real: two `attn run` processes on this machine (one CPU
device each, gloo collectives, a coordinator on a free localhost port) train one model.

Two devices per process hung a gradient step on a 2-core machine, so each process has one. A
hung JAX process ignores SIGTERM: every process here runs under a hard timeout and is stopped
with SIGKILL.
"""

import json
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from attn import cli
from attn.train.distributed import Cluster, cluster_from
from attn.train.workdir import WorkdirLock

from .helpers import (
    ENVIRONMENT,
    assert_same_params,
    checkpoint_steps,
    fake_devices,
    params_of,
    run_command,
)

NUM_STEPS = 4
OVERRIDES = (f"--config.train.num_steps={NUM_STEPS}", "--config.train.checkpoint_every=1")
TIMEOUT = 150  # seconds for a whole run of both processes, on a loaded 2-core machine


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: one process on two fake CPU devices (a fresh process: the device count
    is fixed when JAX starts)."""
    workdir = tmp_path_factory.mktemp("one_process") / "run"
    result = subprocess.run(
        run_command(workdir, *OVERRIDES),
        env={**ENVIRONMENT, "XLA_FLAGS": fake_devices(2)},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_two(
    workdir: Path, extra: tuple[tuple[str, ...], ...] = ((), ())
) -> list[subprocess.Popen]:
    """Processes 0 and 1 of one run (``extra[i]``: more arguments of process i), their output
    in ``workdir``-named log files."""
    address = f"127.0.0.1:{_free_port()}"
    processes = []
    for index in (0, 1):
        command = run_command(workdir, *OVERRIDES, *extra[index])
        command += ["--coordinator", address, "--num-processes", "2", "--process-id", str(index)]
        log = workdir.parent / f"{workdir.name}.process{index}.log"
        with log.open("w") as stream:
            process = subprocess.Popen(
                command, env=ENVIRONMENT, stdout=stream, stderr=subprocess.STDOUT
            )
        process.log = log
        processes.append(process)
    return processes


def _kill(processes) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait()


def _finish(processes, timeout: float = TIMEOUT) -> list[tuple[int, str]]:
    """Each process's exit status and output, once all have ended (SIGKILLed at ``timeout``)."""
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        _kill(processes)
    return [(p.returncode, p.log.read_text()) for p in processes]


def _run_two(workdir: Path, *overrides: str) -> None:
    for status, output in _finish(_start_two(workdir, extra=(overrides, overrides))):
        assert status == 0, output[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize(
    "mesh",
    [(), ("--config.train.mesh.data=1", "--config.train.mesh.fsdp=2")],
    ids=["data_parallel", "fsdp_over_processes"],
)
def test_two_processes_train_what_one_process_trains_on_two_devices(tmp_path, one_process, mesh):
    """The global batch of step i is the single process's one (process p reads its rows), so
    the parameters agree, also when each process holds half of them (fsdp over the two);
    process 0 alone writes the logs, plots and TensorBoard files."""
    _run_two(tmp_path / "two_processes", *mesh)
    want, got = params_of(one_process), params_of(tmp_path / "two_processes")
    assert want.keys() == got.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-7, err_msg=name)
    workdir = tmp_path / "two_processes"
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == NUM_STEPS
    assert len(list((workdir / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert list((workdir / "plots").glob("attention_*.png"))
    assert checkpoint_steps(workdir / "checkpoints" / "latest")[-1] == NUM_STEPS


@pytest.mark.slow
def test_a_killed_process_and_a_rerun_of_both_resume_exactly(tmp_path, one_process):
    """SIGKILL process 1 mid-run (process 0 then waits in a collective: it is killed too), run
    both again: the parameters are bit for bit those of an uninterrupted run. (The reference is
    one process on two fake devices: the same program, and a sum of two gradients does not
    depend on their order.)"""
    workdir = tmp_path / "killed"
    processes = _start_two(workdir)
    latest = workdir / "checkpoints" / "latest"
    deadline = time.monotonic() + TIMEOUT
    try:
        while not any(step >= 2 for step in checkpoint_steps(latest)):
            assert all(p.poll() is None for p in processes), "a process ended before the kill"
            assert time.monotonic() < deadline, "no checkpoint of step 2 in time"
            time.sleep(0.01)
        processes[1].send_signal(signal.SIGKILL)
    finally:
        _kill(processes)
    assert max(checkpoint_steps(latest)) < NUM_STEPS

    _run_two(workdir)
    assert_same_params(params_of(workdir), params_of(one_process))


@pytest.mark.slow
def test_differing_configs_and_a_held_workdir_stop_every_process(tmp_path):
    """Both processes exit with status 2 and a clear message, none waits forever."""
    different = ((), ("--config.train.seed=1",))
    outcomes = _finish(_start_two(tmp_path / "mixed", extra=different))
    for status, output in outcomes:
        assert status == 2 and "the processes run different configs" in output, output[-3000:]
    assert "process(es) [1] differ from process 0" in outcomes[0][1]

    held = tmp_path / "held"
    held.mkdir()
    with WorkdirLock(held):
        outcomes = _finish(_start_two(held))
    for status, output in outcomes:
        assert status == 2 and f"workdir {held} is in use" in output, output[-3000:]


def test_cluster_flags_and_environment_are_checked_before_anything_starts():
    assert cluster_from(environ={}) == Cluster()
    assert cluster_from("10.0.0.1:1234", 4, 3, environ={}) == Cluster("10.0.0.1:1234", 4, 3)
    environment = {
        "ATTN_COORDINATOR": "node0:8476",
        "ATTN_NUM_PROCESSES": "2",
        "ATTN_PROCESS_ID": "1",
    }
    assert cluster_from(environ=environment) == Cluster("node0:8476", 2, 1)
    assert cluster_from(process_id=0, environ=environment) == Cluster("node0:8476", 2, 0)
    for arguments, message in [
        (("node0:8476", None, None), "--num-processes (ATTN_NUM_PROCESSES), --process-id"),
        (("node0", 2, 0), "must be HOST:PORT"),
        (("node0:99999", 2, 0), "must be HOST:PORT"),
        (("node0:8476", "two", 0), "must be an int, got 'two'"),
        (("node0:8476", 0, 0), "must be >= 1"),
        (("node0:8476", 2, 2), "must be in [0, 2), got 2"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            cluster_from(*arguments, environ={})


def test_attn_run_flags_fail_in_one_line(capsys):
    arguments = ["run", "unused.py", "--workdir", "unused", "--coordinator", "localhost"]
    assert cli.main([*arguments, "--num-processes", "2", "--process-id", "0"]) == 2
    assert "--coordinator (ATTN_COORDINATOR) must be HOST:PORT" in capsys.readouterr().err
