"""Workdirs that cannot be corrupted: one run at a time, resuming only under a compatible
config, config.json written atomically, and one-line errors for unusable workdirs."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from attn import cli
from attn.train import config as config_lib
from attn.train import train_and_evaluate
from attn.train.workdir import WorkdirLock, check_resumable

from .helpers import ENVIRONMENT, REVERSE, ROOT, run_command, smoke

HOLD_LOCK = (
    "import sys, time; from pathlib import Path; from attn.train.workdir import WorkdirLock\n"
    "with WorkdirLock(Path(sys.argv[1])):\n"
    "    print('locked', flush=True); time.sleep(600)"
)


def one_line_error(capsys, *parts: str) -> str:
    """The single stderr line of a failed command; it contains every one of ``parts``."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("attn ")]
    assert len(lines) == 1, lines
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished smoke run (6 steps, checkpoints at 3 and 6); tests copy it before changing."""
    workdir = tmp_path_factory.mktemp("trained") / "run"
    train_and_evaluate(smoke(), workdir)
    return workdir


def copy_of(trained, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(trained, target)
    return target


def test_a_second_run_fails_at_once_naming_the_holder(tmp_path, capsys):
    workdir = tmp_path / "run"
    workdir.mkdir()
    with WorkdirLock(workdir):
        assert cli.main(["run", f"{REVERSE}:smoke", "--workdir", str(workdir)]) == 2
    one_line_error(capsys, str(workdir), f"pid {os.getpid()}", f"host {socket.gethostname()}")
    assert not (workdir / "config.json").exists() and not (workdir / "metrics.jsonl").exists()


@pytest.mark.slow
def test_a_killed_holder_leaves_no_stale_lock(tmp_path, capsys):
    """The lock of a process killed with SIGKILL blocks others while it lives, not after."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(workdir)],
        env=ENVIRONMENT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert cli.main(["run", f"{REVERSE}:smoke", "--workdir", str(workdir)]) == 2
        one_line_error(capsys, f"pid {holder.pid}")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert cli.main(["run", f"{REVERSE}:smoke", "--workdir", str(workdir)]) == 0
    assert json.loads((workdir / ".lock").read_text())["pid"] == os.getpid()


@pytest.mark.slow
def test_eval_and_plot_read_a_workdir_while_a_run_holds_it(trained, tmp_path, capsys):
    workdir = copy_of(trained, tmp_path)
    with WorkdirLock(workdir):
        assert cli.main(["eval", "--workdir", str(workdir)]) == 0
        assert cli.main(["plot", "--workdir", str(workdir)]) == 0
    assert "step 6" in capsys.readouterr().out


@pytest.mark.slow
def test_a_run_with_another_model_is_refused_before_touching_the_workdir(trained, tmp_path, capsys):
    workdir = copy_of(trained, tmp_path)
    saved = (workdir / "config.json").read_bytes()
    command = ["run", f"{REVERSE}:smoke", "--workdir", str(workdir)]
    changes = ["--config.model.features=16", "--config.optim.name=lion"]
    assert cli.main([*command, *changes]) == 2
    one_line_error(
        capsys, str(workdir), "model.features: 32 -> 16", "optim.name: 'adamw' -> 'lion'"
    )
    assert (workdir / "config.json").read_bytes() == saved
    assert cli.main(["eval", "--workdir", str(workdir)]) == 0
    capsys.readouterr()
    # Run length and logging may change: the run resumes and goes on to step 8.
    assert cli.main([*command, "--config.train.num_steps=8", "--config.train.log_every=4"]) == 0
    assert json.loads((workdir / "config.json").read_text())["train"]["num_steps"] == 8


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("train.num_steps", "100", True),
        ("train.eval_every", "7", True),
        ("train.max_to_keep", "1", True),
        ("train.sample_prompt", "'x'", True),
        ("optim.schedule_kwargs.decay_steps", "100", True),
        ("data.data_dir", "'/elsewhere'", True),
        ("train.seed", "1", False),
        ("train.best_metric", "'accuracy'", False),
        ("data.batch_size", "4", False),
        ("data.length", "12", False),
        ("optim.learning_rate", "0.1", False),
        ("optim.schedule_kwargs.warmup_steps", "2", False),
        ("model.num_heads", "2", False),
    ],
)
def test_which_config_changes_a_resumed_run_accepts(tmp_path, key, value, allowed):
    path = tmp_path / "config.json"
    config_lib.save_json(smoke(), path)
    changed = smoke(**{key: value})
    if allowed:
        check_resumable(changed, path)
    else:
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            check_resumable(changed, path)


def test_config_json_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    config_lib.save_json(smoke(), path)
    before = path.read_text()

    def crash(source, target):  # the new text is written; the process dies before the rename
        raise OSError("disk full")

    monkeypatch.setattr(config_lib.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        config_lib.save_json(smoke(**{"train.num_steps": 9}), path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temporary file left


@pytest.mark.parametrize("command", ["run", "eval", "plot"])
def test_a_workdir_that_is_a_file_is_a_one_line_error(tmp_path, capsys, command):
    workdir = tmp_path / "file"
    workdir.write_text("not a directory")
    arguments = [f"{REVERSE}:smoke"] if command == "run" else []
    assert cli.main([command, *arguments, "--workdir", str(workdir)]) == 2
    one_line_error(capsys, f"workdir {workdir} is a file")


@pytest.mark.slow
@pytest.mark.parametrize("command", ["run", "eval"])
def test_a_corrupt_config_json_is_a_one_line_error(trained, tmp_path, capsys, command):
    workdir = copy_of(trained, tmp_path)
    (workdir / "config.json").write_text('{"data": {"name": ')
    arguments = [f"{REVERSE}:smoke"] if command == "run" else []
    assert cli.main([command, *arguments, "--workdir", str(workdir)]) == 2
    one_line_error(capsys, f"cannot read {workdir / 'config.json'}")


@pytest.mark.slow
def test_a_read_only_workdir_is_a_one_line_error(trained, tmp_path):
    """A real process without write permission on the workdir (for root: without the capability
    that overrides it); the files an earlier run left inside are still writable."""
    workdir = copy_of(trained, tmp_path)
    before = {path: path.read_bytes() for path in workdir.rglob("*") if path.is_file()}
    command = run_command(workdir)
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root needs setpriv to drop CAP_DAC_OVERRIDE")
        command = ["setpriv", "--bounding-set=-dac_override", "--", *command]
    workdir.chmod(0o555)
    try:
        result = subprocess.run(
            command, env=ENVIRONMENT, capture_output=True, text=True, check=False, cwd=ROOT
        )
    finally:
        workdir.chmod(0o755)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines == [f"attn run: error: cannot write to workdir {workdir}: Permission denied"]
    assert {path: path.read_bytes() for path in workdir.rglob("*") if path.is_file()} == before
