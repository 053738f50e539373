"""Vmapped trials: each trial's results equal that trial run alone with ``train_and_evaluate``
(final parameters, the logged steps and their values), and a program resumes as a unit."""

import json

import numpy as np
import pytest

from attn.models.options import float_values, with_values
from attn.train import train_and_evaluate
from attn.train.config import validate
from attn.train.sweep.groups import plan_programs, program_key, varying_keys
from attn.train.sweep.space import display_name, trial_id
from attn.train.sweep.trials import Trial, trial_config
from attn.train.sweep.vmapped import train_program
from attn.weighting import softmax

from .helpers import params_of, smoke

# Every kind of value a program vmaps over: the learning rate and another optax hyperparameter,
# the clip norm, the init and data seeds, model float options (two dropout rates) and a float
# argument of a weighting spec (the softmax temperature).
OVERRIDES = [
    {
        "optim.learning_rate": 3e-3,
        "train.seed": 0,
        "model.dropout_rate": 0.0,
        "model.attention.weighting": "softmax(temperature=1.0)",
    },
    {
        "optim.learning_rate": 1e-2,
        "train.seed": 2,
        "data.seed": 5,
        "optim.grad_clip_norm": 0.05,
        "optim.kwargs": {"weight_decay": 0.1},
        "model.dropout_rate": 0.2,
        "model.attention.dropout_rate": 0.3,
        "model.attention.weighting": "softmax(temperature=2.0)",
    },
]


def make_trials(base, overrides_list):
    trials = []
    for overrides in overrides_list:
        config = trial_config(base, overrides)
        trials.append(
            Trial(trial_id(overrides), display_name(overrides), overrides, config, validate(config))
        )
    return trials


def records(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.slow
def test_each_trial_equals_its_run_alone(tmp_path):
    base = smoke(**{"train.num_steps": 6, "train.log_every": 2, "train.eval_every": 3})
    trials = make_trials(base, OVERRIDES)
    assert len({program_key(t) for t in trials}) == 1
    assert set(varying_keys(trials)) >= {"optim.learning_rate", "data.seed", "train.seed"}
    outcomes = train_program(trials, tmp_path / "sweep")
    for trial in trials:
        alone = tmp_path / "alone" / trial.id
        want = train_and_evaluate(trial.config, alone)
        got = outcomes[trial.id]
        vmapped = tmp_path / "sweep" / "trials" / trial.id
        got_params, want_params = params_of(vmapped), params_of(alone)
        assert got_params.keys() == want_params.keys()
        for name in want_params:
            np.testing.assert_allclose(
                got_params[name], want_params[name], rtol=1e-5, atol=1e-6, err_msg=name
            )
        got_records, want_records = records(vmapped), records(alone)
        assert [(r["step"], r["split"]) for r in got_records] == [
            (r["step"], r["split"]) for r in want_records
        ]
        for g, w in zip(got_records, want_records, strict=True):
            for key in ("loss", "accuracy", "grad_norm", "learning_rate"):
                if key in w:
                    np.testing.assert_allclose(g[key], w[key], rtol=1e-4, err_msg=key)
        assert got["best"]["step"] == want["best"]["step"]


def test_programs_split_on_structure():
    base = smoke()
    trials = make_trials(
        base,
        [
            {"optim.learning_rate": 1e-3},
            {"optim.learning_rate": 2e-3},
            {"model.features": 16},
            {"optim.grad_clip_norm": None},
            {"optim.learning_rate": 3e-3},
        ],
    )
    programs = plan_programs(trials, max_per_program=2)
    assert [[t.overrides for t in p] for p in programs] == [
        [{"optim.learning_rate": 1e-3}, {"optim.learning_rate": 2e-3}],
        [{"optim.learning_rate": 3e-3}],
        [{"model.features": 16}],
        [{"optim.grad_clip_norm": None}],
    ]
    with pytest.raises(ValueError, match="max_per_program must be >= 1"):
        plan_programs(trials, 0)


def test_spec_floats_are_per_trial_values():
    base = smoke()
    hot, cold, other = make_trials(
        base,
        [
            {"model.attention.weighting": "softmax(temperature=2.0)"},
            {"model.attention.weighting": "softmax(temperature=0.5)"},
            {"model.attention.weighting": "sparsemax"},
        ],
    )
    assert float_values(hot.checked.model)["attention.weighting(temperature)"] == 2.0
    assert program_key(hot) == program_key(cold) != program_key(other)
    traced = with_values(hot.checked.model, {"attention.weighting(temperature)": 0.25})
    logits = np.array([[0.0, 1.0]])
    np.testing.assert_allclose(
        traced.attention.weighting(logits, None), softmax(logits, None, temperature=0.25)
    )
