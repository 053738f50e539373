"""A loop that does not wait on the host: step t + 1 is dispatched before step t's metrics are
read, batches come from a background thread, and the compiled step refuses a bad update."""

import itertools
import json
import threading

import jax
import numpy as np
import pytest

from attn.train import NonFiniteLossError, train_and_evaluate
from attn.train.loop import Experiment
from attn.train.prefetch import Prefetcher

from .helpers import smoke


class Recorded:
    """A value the step returned; the host reading it is recorded in ``events``."""

    def __init__(self, value: jax.Array, step: int, events: list):
        self.value, self.step, self.events = value, step, events

    def _read(self):
        self.events.append(("read", self.step))
        return np.asarray(self.value)

    def __array__(self, dtype=None, copy=None):
        return self._read()

    def __float__(self):
        return float(self._read())

    def __bool__(self):
        return bool(self._read())


@pytest.mark.slow
def test_the_next_step_is_dispatched_before_a_steps_metrics_are_read(tmp_path, monkeypatch):
    events, losses = [], {}
    build = Experiment.__init__

    def instrumented(self, *args, **kwargs):
        build(self, *args, **kwargs)
        compiled = self._train_step

        def step(state, batch, trial_values):
            state, *outputs = compiled(state, batch, trial_values)
            number = len([kind for kind, _ in events if kind == "dispatch"]) + 1
            events.append(("dispatch", number))
            losses[number] = float(np.asarray(outputs[0]["loss"]))  # for the test alone
            return state, *jax.tree.map(lambda x: Recorded(x, number, events), outputs)

        self._train_step = step

    monkeypatch.setattr(Experiment, "__init__", instrumented)
    overrides = {"train.num_steps": 12, "train.log_every": 6, "train.checkpoint_every": 12}
    train_and_evaluate(smoke(**overrides), tmp_path)

    def position(event):
        return events.index(event)

    for step in [*range(1, 6), *range(7, 12)]:  # not a log/eval/checkpoint step
        assert position(("dispatch", step + 1)) < position(("read", step)), (step, events)
    # The records hold the same values as when every step was read at once.
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [record for record in records if record["split"] == "train"]
    assert [record["step"] for record in train] == [6, 12]
    for record, steps in zip(train, (range(1, 7), range(7, 13)), strict=True):
        assert set(record) == {
            "step",
            "split",
            "loss",
            "grad_norm",
            "learning_rate",
            "steps_per_second",
            "examples_per_second",
        }
        np.testing.assert_allclose(record["loss"], np.mean([losses[s] for s in steps]), rtol=1e-6)


@pytest.mark.slow
def test_the_compiled_step_refuses_a_non_finite_update(tmp_path):
    experiment = Experiment(smoke(), tmp_path)
    batch = experiment.task.train_batch(0)
    before = jax.device_get(experiment.state)

    poisoned = {**batch, "weights": np.full_like(batch["weights"], np.nan)}
    state, metrics, finite = experiment._train_step(
        experiment.state, experiment.shard(poisoned), experiment.trial_values
    )
    assert not finite and np.isnan(metrics["loss"])
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state), before)

    state, metrics, finite = experiment._train_step(
        state, experiment.shard(batch), experiment.trial_values
    )
    assert finite and np.isfinite(metrics["loss"]) and int(state["step"]) == 1
    experiment.close()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_parameters_a_finite_gradient_overflows_are_never_saved(tmp_path):
    """An infinite learning rate: the first step's loss and gradient are finite, its update not."""
    overrides = {"optim.learning_rate": 1e39, "train.checkpoint_every": 1, "train.num_steps": 3}
    with pytest.raises(NonFiniteLossError, match="parameters became non-finite at step 1"):
        train_and_evaluate(smoke(**overrides), tmp_path)
    assert not (tmp_path / "checkpoints" / "latest" / "1").exists()


def test_prefetcher_yields_the_items_of_a_plain_loop_in_order():
    with Prefetcher(lambda i: i * i, range(3, 50), depth=2) as items:
        assert list(items) == [i * i for i in range(3, 50)]
        with pytest.raises(StopIteration):
            next(items)


def test_prefetcher_raises_the_producers_error_in_the_consumer():
    def produce(index):
        if index == 3:
            raise ValueError("bad batch 3")
        return index

    with Prefetcher(produce, range(10)) as items:
        assert [next(items) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(ValueError, match="bad batch 3"):
            next(items)


def test_leaving_a_prefetcher_early_stops_its_thread():
    produced = []
    with Prefetcher(lambda i: produced.append(i) or i, itertools.count(), depth=2) as items:
        assert next(items) == 0
    assert not [thread for thread in threading.enumerate() if thread.name == "prefetch"]
    assert len(produced) <= 4  # the one taken, two queued, one waiting to be
