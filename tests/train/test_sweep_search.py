"""``--search tpe``: Optuna's sampler proposes the trials over a random() sweep's
distributions, and they run like listed trials."""

import json

import pytest

from attn.train.sweep import runner

from .helpers import sweep_experiment


@pytest.mark.slow
def test_search_proposes_trials_inside_the_distributions(tmp_path):
    experiment = sweep_experiment(
        tmp_path, "random(4, seed=0, **{'optim.learning_rate': loguniform(1e-4, 1e-2)})"
    )
    table = runner.run_sweep(
        f"{experiment}:smoke", tmp_path / "sweep", [("train.num_steps", "2")], search_trials=2
    )
    statuses = [
        json.loads(path.read_text()) for path in (tmp_path / "sweep").glob("trials/*/trial.json")
    ]
    assert len(statuses) == 2 and {s["status"] for s in statuses} == {"done"}
    for status in statuses:
        assert 1e-4 <= status["overrides"]["optim.learning_rate"] < 1e-2
    assert table.count("| lr=") == 2


def test_search_needs_random_draws(tmp_path):
    experiment = sweep_experiment(tmp_path, {"optim.learning_rate": [1e-3]})
    with pytest.raises(ValueError, match="--search needs sweep"):
        runner.run_sweep(f"{experiment}:smoke", tmp_path / "sweep", search_trials=2)
