"""Ctrl-C (SIGINT) on a real `attn run`: a checkpoint of the current step, exit status 130, and
a resumed run that ends with exactly the parameters of an uninterrupted one."""

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from .helpers import ENVIRONMENT, assert_same_params, checkpoint_steps, params_of, run_command

# Real `attn run` processes, interrupted and resumed.
pytestmark = pytest.mark.slow

# Long enough to be interrupted in the middle (reverse:smoke runs 100-500 steps a second here);
# no periodic checkpoint before step 500, so the one after Ctrl-C is the interrupt's own.
OVERRIDES = [
    "--config.train.num_steps=1000",
    "--config.train.log_every=10",
    "--config.train.eval_every=0",
    "--config.train.checkpoint_every=500",
]
DEADLINE_SECONDS = 300


class Run:
    """`attn run` in a subprocess, its stderr collected as it comes."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.process = subprocess.Popen(
            run_command(workdir, *OVERRIDES),
            env=ENVIRONMENT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.stderr = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for chunk in iter(lambda: self.process.stderr.read1(4096), b""):
            self.stderr += chunk

    def wait_for(self, condition, what: str) -> None:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not condition():
            assert self.process.poll() is None, f"exited before {what}: {self.text()[-2000:]}"
            assert time.monotonic() < deadline, f"no {what} in {DEADLINE_SECONDS} s"
            time.sleep(0.005)

    def training(self) -> bool:
        metrics = self.workdir / "metrics.jsonl"
        return metrics.exists() and '"split": "train"' in metrics.read_text()

    def finish(self) -> int:
        code = self.process.wait(timeout=DEADLINE_SECONDS)
        self._reader.join()
        return code

    def text(self) -> str:
        return self.stderr.decode(errors="replace")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted") / "run"
    subprocess.run(
        run_command(workdir, *OVERRIDES), check=True, env=ENVIRONMENT, capture_output=True
    )
    return params_of(workdir)


def resume_and_compare(workdir: Path, uninterrupted: dict) -> None:
    result = subprocess.run(
        run_command(workdir, *OVERRIDES), env=ENVIRONMENT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert_same_params(params_of(workdir), uninterrupted)
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    steps = [record["step"] for record in records if record["split"] == "train"]
    assert steps == sorted(set(steps))  # one run's log


def test_ctrl_c_saves_the_current_step_and_the_run_resumes_exactly(tmp_path, uninterrupted):
    run = Run(tmp_path / "run")
    run.wait_for(run.training, "training")
    run.process.send_signal(signal.SIGINT)
    assert run.finish() == 130, run.text()[-2000:]
    latest = run.workdir / "checkpoints" / "latest"
    [step] = checkpoint_steps(latest)
    assert 10 <= step < 500
    last_line = run.text().strip().splitlines()[-1]
    assert last_line == (
        f"attn run: interrupted at step {step}; checkpoint saved in {latest.absolute() / str(step)}"
        ". Run the same command again to resume."
    )
    assert "Traceback" not in run.text()
    assert (run.workdir / "tensorboard").is_dir()
    resume_and_compare(run.workdir, uninterrupted)


def test_a_second_ctrl_c_during_the_save_corrupts_nothing(tmp_path, uninterrupted):
    run = Run(tmp_path / "run")
    run.wait_for(run.training, "training")
    run.process.send_signal(signal.SIGINT)
    run.wait_for(lambda: "saving a checkpoint" in run.text(), "save")
    run.process.send_signal(signal.SIGINT)
    assert run.finish() == 130, run.text()[-2000:]
    # Whether the save was cut short or had just finished, what is there restores exactly.
    resume_and_compare(run.workdir, uninterrupted)
    leftovers = [p for p in (run.workdir / "checkpoints" / "latest").iterdir() if "tmp" in p.name]
    assert not leftovers
