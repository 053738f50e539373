"""Greedy decoding and sampling agree with the teacher-forced forward pass."""

import jax
import numpy as np
import pytest
from flax import nnx

from .common import build, make_batch

# Decoding loops compiled per model and option set.
pytestmark = pytest.mark.slow

SEQ2SEQ_CASES = [
    ("encoder_decoder", {"positional": "sinusoidal", "num_layers": 2}),
    ("encoder_decoder", {"positional": "rope", "mask": "sliding_window(left=2, right=2)"}),
    ("encoder_decoder", {"positional": "alibi", "weighting": "sparsemax"}),
    # Variants: teacher forcing takes their linear-cost path, cached decoding the quadratic one.
    ("encoder_decoder", {"variant": "linear"}),
    ("encoder_decoder", {"variant": "performer(num_features=32)"}),
    ("rnn_seq2seq", {"cell": "gru", "score": "additive"}),
    ("rnn_seq2seq", {"cell": "lstm", "score": "general"}),
    ("rnn_seq2seq", {"cell": "gru", "score": "dot"}),
]


@pytest.mark.parametrize(("name", "options"), SEQ2SEQ_CASES)
def test_greedy_predictions_are_argmax_of_teacher_forcing_on_themselves(name, options):
    """Feeding predict()'s output back as targets, the teacher-forced argmax reproduces it at
    every step: the decoding loop (KV cache or RNN steps) computes what __call__ computes."""
    model, task = build(name, "seq2seq", **options)
    batch = make_batch(task)
    predictions = np.asarray(model.predict(batch))
    assert len(np.unique(predictions)) > 2, "degenerate decode makes this test weak"
    logits = model(dict(batch, targets=predictions), deterministic=True)
    np.testing.assert_array_equal(np.argmax(logits, axis=-1), predictions)
    # Argmax is robust to small errors (a wrong position may not flip it); the logits are not.
    tokens, step_logits = model.greedy_decode(batch)
    np.testing.assert_array_equal(tokens, predictions)
    np.testing.assert_allclose(step_logits, logits, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["encoder_decoder", "rnn_seq2seq"])
def test_predict_never_looks_at_targets(name):
    model, task = build(name, "seq2seq")
    batch = make_batch(task)
    other = dict(batch, targets=np.ones_like(batch["targets"]))
    np.testing.assert_array_equal(model.predict(batch), model.predict(other))
    without = {"inputs": batch["inputs"]}
    np.testing.assert_array_equal(model.predict(batch), model.predict(without))


def greedy_by_full_forward(model, prompt, num_tokens):
    """Reference without a cache: re-run the whole sequence for every new token. The buffer
    has its final length from the start (one shape, one compile); the filler after the
    current token cannot matter as the model is causal (test_masking checks that)."""
    P = prompt.shape[1]
    sequence = np.pad(prompt, ((0, 0), (0, num_tokens)), constant_values=1)
    for position in range(P - 1, P + num_tokens - 1):
        logits = np.asarray(model({"inputs": sequence}, deterministic=True))
        sequence[:, position + 1] = np.argmax(logits[:, position], axis=-1)
    return sequence


@pytest.mark.parametrize(
    "options",
    [
        {"positional": "sinusoidal", "num_layers": 2},
        {"positional": "learned"},
        {"positional": "rope", "mask": "sliding_window(left=2)"},
        # Not shift-invariant, so ALiBi's query offsets must be right. (The default sigmoid bias,
        # -log(S), depends on the number of key slots, so a cache would change it.)
        {"positional": "alibi", "weighting": "sigmoid(bias=-2.0)"},
    ],
)
def test_sample_at_zero_temperature_is_greedy(options):
    model, task = build("decoder_lm", "lm", **options)
    prompt = make_batch(task)["inputs"][:, :3]
    prompt[0] = [0, 0, 5]  # a left-padded prompt
    want = greedy_by_full_forward(model, prompt, 4)
    assert len(np.unique(want[:, 3:])) > 1, "degenerate decode makes this test weak"
    got = model.sample(prompt, 4, jax.random.key(0), temperature=0.0)
    np.testing.assert_array_equal(got, want)
    if options["positional"] == "sinusoidal":  # the limit, not just the special case
        got = model.sample(prompt, 4, jax.random.key(0), temperature=1e-6)
        np.testing.assert_array_equal(got, want)


def test_sample_draws_from_the_distribution():
    model, task = build("decoder_lm", "lm")
    prompt = make_batch(task)["inputs"][:, :3]
    first = np.asarray(model.sample(prompt, 4, jax.random.key(0)))
    second = np.asarray(model.sample(prompt, 4, jax.random.key(1)))
    assert first.shape == (3, 7) and first.dtype == np.int32
    np.testing.assert_array_equal(first[:, :3], prompt)
    assert ((first[:, 3:] >= 0) & (first[:, 3:] < task.target_vocab_size)).all()
    assert not np.array_equal(first, second), "different keys should give different samples"
    np.testing.assert_array_equal(first, model.sample(prompt, 4, jax.random.key(0)))
    greedy = greedy_by_full_forward(model, prompt, 4)
    assert not np.array_equal(first, greedy), "temperature 1 should not be greedy"


def test_decoding_leaves_the_model_unchanged():
    model, task = build("decoder_lm", "lm")
    batch = make_batch(task)
    before = nnx.state(model)
    model.predict(batch)
    model.attention_maps(batch)
    model.sample(batch["inputs"][:, :3], 4, jax.random.key(0))
    assert jax.tree.leaves(nnx.state(model, nnx.Cache)) == []
    assert jax.tree.structure(nnx.state(model)) == jax.tree.structure(before)
    for a, b in zip(jax.tree.leaves(nnx.state(model)), jax.tree.leaves(before), strict=True):
        np.testing.assert_array_equal(a, b)
