"""Sweep declarations: grids, seeded random draws, trial ids and names."""

import numpy as np
import pytest

from attn.train.sweep.space import choice, display_name, grid, loguniform, random, trial_id, uniform


def test_grid_is_the_cartesian_product_last_key_fastest():
    trials = grid(**{"optim.learning_rate": [1e-3, 3e-3], "train.seed": [0, 1]})
    assert trials == [
        {"optim.learning_rate": 1e-3, "train.seed": 0},
        {"optim.learning_rate": 1e-3, "train.seed": 1},
        {"optim.learning_rate": 3e-3, "train.seed": 0},
        {"optim.learning_rate": 3e-3, "train.seed": 1},
    ]
    assert grid(optim__learning_rate=[0.1]) == [{"optim.learning_rate": 0.1}]


def test_random_is_reproducible_and_inside_its_ranges():
    space = {
        "optim.learning_rate": loguniform(1e-4, 1e-2),
        "model.dropout_rate": uniform(0.0, 0.3),
        "model.attention.weighting": choice("softmax", "sigmoid"),
        "train.num_steps": 100,
    }
    first, again = random(20, seed=3, **space), random(20, seed=3, **space)
    assert first == again and first != random(20, seed=4, **space)
    rates = np.array([t["optim.learning_rate"] for t in first])
    assert ((rates >= 1e-4) & (rates < 1e-2)).all()
    assert rates.min() < 1e-3 < rates.max()  # spread over the decades, not clustered at the top
    assert {t["model.attention.weighting"] for t in first} == {"softmax", "sigmoid"}
    assert {t["train.num_steps"] for t in first} == {100}


def test_trial_ids_depend_on_the_overrides_only():
    a = {"optim.learning_rate": 0.001, "train.seed": 1}
    b = {"train.seed": 1, "optim.learning_rate": 0.001}
    assert trial_id(a) == trial_id(b) and len(trial_id(a)) == 10
    assert trial_id(a) != trial_id({**a, "train.seed": 2})


def test_display_names_are_short():
    assert display_name({"optim.learning_rate": 0.0003, "train.seed": 1}) == "lr=0.0003,seed=1"
    assert (
        display_name({"model.dropout_rate": 0.1, "model.attention.dropout_rate": 0.2})
        == "model.dropout_rate=0.1,model.attention.dropout_rate=0.2"
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: grid(**{"optim.learning_rate": []}), "non-empty list"),
        (lambda: grid(**{"optim.learning_rate": "0.1"}), "non-empty list"),
        (lambda: grid(learning_rate=[0.1]), "dotted config keys"),
        (lambda: random(0, seed=0), "positive int"),
        (lambda: loguniform(0.0, 1.0), "0 < low"),
        (lambda: uniform(1.0, 1.0), "low < high"),
        (lambda: choice(), "at least one"),
    ],
)
def test_bad_declarations_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()
