"""The RL experiments' smoke variants through `attn run`, `attn eval` and `attn plot`, and an
exact resume after SIGKILL."""

import json

import numpy as np
import pytest
from train.helpers import (
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

EXPERIMENTS = ROOT / "experiments"
CARTPOLE = str(EXPERIMENTS / "rl_cartpole.py")
# Long enough to be killed in the middle; evaluated once, at the end.
OVERRIDES = {"train.num_steps": 16, "train.checkpoint_every": 2, "train.eval_every": 0}


def test_the_knapsack_smoke_run_trains_evaluates_and_plots(tmp_path, capsys):
    """rl_tsp:smoke runs the same code (episodes, a reference, the gap); its plot is tested
    on a made-up rollout (tests/rl/test_plots.py)."""
    final = train_and_evaluate(smoke(str(EXPERIMENTS / "rl_knapsack.py")), tmp_path)
    assert {"return", "reference_return", "gap"} <= final["eval"].keys()
    assert np.isfinite(final["train"]["loss"]) and final["train"]["env_steps_per_second"] > 0
    assert (tmp_path / "plots" / "rollout_example0.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "curves.png").is_file()
    assert cli.main(["eval", "--workdir", str(tmp_path)]) == 0
    assert "gap" in capsys.readouterr().out
    assert cli.main(["plot", "--workdir", str(tmp_path), "--examples", "1"]) == 0
    assert "rollout_example0_cli.png" in capsys.readouterr().out


def test_a_killed_cartpole_run_resumes_to_identical_parameters(tmp_path):
    """The whole run in this process; an `attn run` subprocess killed mid-run (it shares the
    compiled programs) and resumed here. The checkpoints hold the environments' states, the
    observations and the random key."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    final = train_and_evaluate(smoke(CARTPOLE, **OVERRIDES), whole)
    assert np.isfinite(final["eval"]["return"])

    command = run_command(
        killed,
        *(f"--config.{key}={value}" for key, value in OVERRIDES.items()),
        experiment=f"{CARTPOLE}:smoke",
    )
    left = kill_mid_run(command, killed, after_step=4)
    assert left and max(left) < 16
    train_and_evaluate(smoke(CARTPOLE, **OVERRIDES), killed)
    assert_same_params(params_of(killed), params_of(whole))
    # So did the episodes in progress: the last update's logs agree.
    last = [
        [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()][-2]
        for d in (whole, killed)
    ]
    assert last[0]["split"] == "train"
    assert last[0]["loss"] == last[1]["loss"]
    assert last[0].get("episode_return") == last[1].get("episode_return")
