"""The RL experiments through `attn run`, `attn eval` and `attn plot`, and an exact resume
after SIGKILL."""

import json
import subprocess

import numpy as np
import pytest
from train.helpers import (
    ENVIRONMENT,
    ROOT,
    assert_same_params,
    kill_mid_run,
    params_of,
    run_command,
    smoke,
)

from attn import cli
from attn.rl import train_and_evaluate

pytestmark = pytest.mark.slow  # compiles PPO updates (seconds each)

CARTPOLE = str(ROOT / "experiments" / "rl_cartpole.py")
KNAPSACK = str(ROOT / "experiments" / "rl_knapsack.py")
TSP = str(ROOT / "experiments" / "rl_tsp.py")


@pytest.mark.parametrize("path", [KNAPSACK, TSP])
def test_combinatorial_smoke_runs_train_evaluate_and_plot(path, tmp_path, capsys):
    final = train_and_evaluate(smoke(path), tmp_path)
    assert {"return", "reference_return", "gap"} <= final["eval"].keys()
    assert np.isfinite(final["train"]["loss"]) and final["train"]["env_steps_per_second"] > 0
    assert (tmp_path / "plots" / "rollout_example0.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "curves.png").is_file()
    assert cli.main(["eval", "--workdir", str(tmp_path)]) == 0
    assert "gap" in capsys.readouterr().out
    assert cli.main(["plot", "--workdir", str(tmp_path), "--examples", "1"]) == 0
    assert "rollout_example0_cli.png" in capsys.readouterr().out


def test_a_killed_cartpole_run_resumes_to_identical_parameters(tmp_path):
    overrides = [
        "--config.train.num_steps=40",
        "--config.train.checkpoint_every=2",
        "--config.train.eval_every=0",
    ]
    uninterrupted, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    subprocess.run(
        run_command(uninterrupted, *overrides, experiment=f"{CARTPOLE}:smoke"),
        check=True,
        env=ENVIRONMENT,
        capture_output=True,
    )
    left = kill_mid_run(run_command(killed, *overrides, experiment=f"{CARTPOLE}:smoke"), killed, 6)
    assert left and max(left) < 40
    result = subprocess.run(
        run_command(killed, *overrides, experiment=f"{CARTPOLE}:smoke"),
        env=ENVIRONMENT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    want = params_of(uninterrupted)
    assert_same_params(params_of(killed), want)
    # The environments and the random key resumed too: the last update's logs agree.
    logs = [
        [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        for d in (uninterrupted, killed)
    ]
    assert logs[0][-1]["loss"] == logs[1][-1]["loss"]
    assert cli.main(["eval", "--workdir", str(killed), "--checkpoint", "latest"]) == 0
