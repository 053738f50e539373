"""A few dozen Adam steps fit four fixed examples: the models can learn through every part."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from .common import Task, build

# Dozens of optimisation steps per model.
pytestmark = pytest.mark.slow

LENGTH = 8


def reverse_examples(kind: str) -> tuple[Task, dict[str, np.ndarray]]:
    """Four sequences and their reversals; example 0 is shorter (right-padded)."""
    rng = np.random.default_rng(0)
    inputs = rng.integers(1, 10, (4, LENGTH)).astype(np.int32)
    inputs[0, -3:] = 0
    targets = np.stack([np.concatenate([x[x != 0][::-1], x[x == 0]]) for x in inputs])
    task = Task(kind, 10, 10, LENGTH, LENGTH)
    return task, {"inputs": inputs, "targets": targets, "weights": (targets != 0) * 1.0}


def fit(model, batch, steps: int, learning_rate: float) -> tuple[float, float]:
    optimizer = nnx.Optimizer(model, optax.adam(learning_rate), wrt=nnx.Param)

    def loss_fn(model, batch):
        logits = model(batch, deterministic=False)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        return jnp.sum(losses * batch["weights"]) / jnp.sum(batch["weights"])

    @nnx.jit
    def train_step(model, optimizer, batch):
        loss, grads = nnx.value_and_grad(loss_fn)(model, batch)
        optimizer.update(model, grads)
        return loss

    batch = jax.tree.map(jnp.asarray, batch)
    losses = [float(train_step(model, optimizer, batch)) for _ in range(steps)]
    return losses[0], losses[-1]


@pytest.mark.parametrize(
    ("name", "kind", "learning_rate", "options"),
    [
        ("encoder_classifier", "tag", 1e-2, {"positional": "sinusoidal"}),
        ("encoder_decoder", "seq2seq", 1e-2, {"positional": "rope"}),
        ("rnn_seq2seq", "seq2seq", 2e-2, {"score": "additive"}),
    ],
)
def test_overfits_four_reversals(name, kind, learning_rate, options):
    """At these settings the loss falls 50-150x in 40 steps; 10x leaves room for other seeds."""
    task, batch = reverse_examples(kind)
    model, _ = build(name, kind, task=task, **options)
    first, last = fit(model, batch, steps=40, learning_rate=learning_rate)
    assert last < first / 10, (first, last)
    if kind == "seq2seq":  # and greedy decoding, which never sees the targets, has learned it
        predictions = np.asarray(model.predict(batch))
        real = batch["weights"] > 0
        assert (predictions[real] == batch["targets"][real]).mean() > 0.9
