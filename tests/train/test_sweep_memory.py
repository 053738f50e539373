"""K from the compiled program's memory analysis: a program that does not fit on the devices
is split before it runs."""

import json
import types

import pytest

from attn.train.sweep import runner, vmapped

from .helpers import sweep_experiment


def compiled_needing(argument, output, temp, alias=0):
    analysis = types.SimpleNamespace(
        argument_size_in_bytes=argument,
        output_size_in_bytes=output,
        temp_size_in_bytes=temp,
        alias_size_in_bytes=alias,
    )
    return types.SimpleNamespace(memory_analysis=lambda: analysis)


def test_check_memory(monkeypatch):
    monkeypatch.setattr(vmapped, "device_memory_limit", lambda: 1000)
    vmapped.check_memory(compiled_needing(400, 400, 100), 4)  # 900 of 1000: fits
    with pytest.raises(vmapped.ProgramTooLarge, match="2 fit") as raised:
        vmapped.check_memory(compiled_needing(800, 800, 200, alias=300), 4)  # 1500 bytes
    assert raised.value.fits == 2
    with pytest.raises(vmapped.ProgramTooLarge) as raised:
        vmapped.check_memory(compiled_needing(10**6, 0, 0), 4)
    assert raised.value.fits == 1
    monkeypatch.setattr(vmapped, "device_memory_limit", lambda: None)  # CPU: no figure
    vmapped.check_memory(compiled_needing(10**9, 0, 0), 4)


@pytest.mark.slow
def test_a_program_that_does_not_fit_runs_smaller(tmp_path, monkeypatch):
    experiment = sweep_experiment(tmp_path, {"optim.learning_rate": [1e-3, 3e-3]})
    monkeypatch.setattr(vmapped, "device_memory_limit", lambda: 1)  # nothing fits
    table = runner.run_sweep(f"{experiment}:smoke", tmp_path / "sweep", [("train.num_steps", "2")])
    statuses = [
        json.loads(path.read_text()) for path in (tmp_path / "sweep").glob("trials/*/trial.json")
    ]
    assert [(s["status"], s["size"]) for s in statuses] == [("done", 1), ("done", 1)]
    assert "lr=0.001" in table and "lr=0.003" in table
