"""Trials that share no program run side by side as ``attn run`` subprocesses, one per device
(here two pretend devices: the slots' environments are what a GPU machine would set)."""

import json

import pytest

from attn.train.sweep import pool, runner

from .helpers import sweep_experiment


def test_no_slots_on_one_cpu():
    assert pool.device_slots() == []


@pytest.mark.slow
def test_single_trials_run_as_one_subprocess_per_device(tmp_path, monkeypatch):
    experiment = sweep_experiment(tmp_path, {"model.features": [16, 32]})  # two programs
    slots = [{"ATTN_TEST_SLOT": "0"}, {"ATTN_TEST_SLOT": "1"}]
    monkeypatch.setattr(runner, "device_slots", lambda: slots)
    table = runner.run_sweep(f"{experiment}:smoke", tmp_path / "sweep", [("train.num_steps", "2")])
    statuses = sorted(
        (json.loads(path.read_text()) for path in (tmp_path / "sweep").glob("trials/*/trial.json")),
        key=lambda status: status["group"],
    )
    assert [(s["status"], s["group"]) for s in statuses] == [
        ("done", "device 0"),
        ("done", "device 1"),
    ]
    for status in statuses:
        log = (tmp_path / "sweep" / "trials" / status["id"] / "run.log").read_text()
        assert "done: " in log  # attn run's last line
    assert "features=16" in table and "features=32" in table
