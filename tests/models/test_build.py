"""build_model: output shapes per model and task kind, config handling, dtypes, errors."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

import attn.models

from .common import MODEL_KINDS, SMALL, Task, build, make_batch


def expected_logits_shape(task: Task, batch_size: int) -> tuple[int, ...]:
    if task.kind == "classify":
        return (batch_size, task.target_vocab_size)
    length = task.target_length if task.kind == "seq2seq" else task.input_length
    return (batch_size, length, task.target_vocab_size)


@pytest.mark.parametrize(("name", "kind"), MODEL_KINDS)
def test_logits_and_predictions_have_the_task_shapes(name, kind):
    model, task = build(name, kind)
    batch = make_batch(task)
    logits = model(batch, deterministic=True)
    assert logits.shape == expected_logits_shape(task, 3)
    assert logits.dtype == jnp.float32
    assert np.isfinite(np.asarray(logits)).all()
    predictions = model.predict(batch)
    assert predictions.shape == batch["targets"].shape
    assert predictions.dtype == jnp.int32
    assert ((predictions >= 0) & (predictions < task.target_vocab_size)).all()


@pytest.mark.parametrize("positional", ["sinusoidal", "learned", "rope", "alibi", "none"])
def test_every_positional_scheme_builds_and_runs(positional):
    model, task = build("encoder_decoder", "seq2seq", positional=positional)
    logits = model(make_batch(task), deterministic=True)
    assert logits.shape == expected_logits_shape(task, 3)
    assert np.isfinite(np.asarray(logits)).all()


@pytest.mark.parametrize(
    "variant", ["linear", "performer(num_features=16)", "linformer(projected_length=3)"]
)
def test_attention_variants_from_the_config(variant):
    """model.attention.variant replaces attend in every layer; padded examples stay exact."""
    model, task = build("encoder_classifier", "classify", variant=variant)
    plain, _ = build("encoder_classifier", "classify")
    batch = make_batch(task)
    logits = model(batch, deterministic=True)
    assert logits.shape == expected_logits_shape(task, 3)
    assert np.isfinite(np.asarray(logits)).all()
    assert not np.allclose(logits, plain(batch, deterministic=True), atol=1e-4)
    # Example 0 is right-padded by 2: alone and unpadded it gets the same logits.
    alone = {name: value[:1] for name, value in batch.items()}
    alone["inputs"] = alone["inputs"][:, :-2]
    np.testing.assert_allclose(model(alone, deterministic=True)[0], logits[0], atol=1e-5)


def test_positional_schemes_change_the_function():
    """Each scheme is wired in: same parameters, different positions -> different logits."""
    outputs = {}
    for positional in ["sinusoidal", "rope", "alibi", "none"]:
        model, task = build("encoder_classifier", "tag", positional=positional)
        outputs[positional] = np.asarray(model(make_batch(task), deterministic=True))
    for a in outputs:
        for b in outputs:
            if a < b:
                assert not np.allclose(outputs[a], outputs[b], atol=1e-4), (a, b)


def test_encoder_without_positions_is_permutation_equivariant():
    model, task = build("encoder_classifier", "tag", positional="none")
    batch = make_batch(task)
    permutation = np.array([3, 1, 4, 0, 2, 5, 6])  # keeps example 0's padding at the end
    permuted = dict(batch, inputs=batch["inputs"][:, permutation])
    np.testing.assert_allclose(
        model(permuted, deterministic=True),
        np.asarray(model(batch, deterministic=True))[:, permutation],
        atol=1e-5,
    )


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_classifier_pools(pool):
    model, task = build("encoder_classifier", "classify", pool=pool)
    assert model(make_batch(task), deterministic=True).shape == (3, task.target_vocab_size)


def test_config_dict_numpy_task_and_defaults():
    config = ml_collections.ConfigDict(
        {"name": "encoder_classifier", "attention": {"mask": None}, **SMALL}
    )
    task = Task("classify", *(np.int64(n) for n in (13, 11, 7, 5)))
    model = attn.models.build_model(config, task, rngs=nnx.Rngs(0))
    assert isinstance(model, attn.models.EncoderClassifier)
    assert model(make_batch(Task("classify")), deterministic=True).shape == (3, 11)
    defaults = attn.models.default_config("decoder_lm").attention
    assert (defaults.positional, defaults.score, defaults.weighting) == (
        "sinusoidal",
        "scaled_dot",
        "softmax",
    )


def test_catalog_specs_are_used():
    """A score with arguments and another weighting give another function."""
    plain, task = build("encoder_classifier", "tag")
    batch = make_batch(task)
    other, _ = build(
        "encoder_classifier", "tag", score="cosine(temperature=0.1)", weighting="sparsemax"
    )
    assert not np.allclose(plain(batch, deterministic=True), other(batch, deterministic=True))


@pytest.mark.parametrize(
    ("name", "kind"),
    [("encoder_decoder", "seq2seq"), ("rnn_seq2seq", "seq2seq")],
)
def test_bfloat16_computes_in_bfloat16_with_float32_params(name, kind):
    model32, task = build(name, kind)
    model16, _ = build(name, kind, dtype="bfloat16")
    params = jax.tree.leaves(nnx.state(model16, nnx.Param))
    assert params and all(p.dtype == jnp.float32 for p in params)
    batch = make_batch(task)
    logits32 = np.asarray(model32(batch, deterministic=True))
    logits16 = model16(batch, deterministic=True)
    assert logits16.dtype == jnp.float32  # cast back for the loss
    # Same parameters (same seed), so the difference is rounding: there, but small.
    assert not np.array_equal(logits32, np.asarray(logits16))
    np.testing.assert_allclose(logits16, logits32, atol=0.25, rtol=0.1)


def test_bfloat16_decoding():
    lm, task = build("decoder_lm", "lm", dtype="bfloat16")
    prompt = make_batch(task)["inputs"][:, :3]
    assert lm.sample(prompt, 4, jax.random.key(0), temperature=0.0).shape == (3, 7)


def test_dropout_only_when_not_deterministic():
    model, task = build(
        "encoder_classifier", "tag", dropout_rate=0.3, attention={"dropout_rate": 0.3}
    )
    batch = make_batch(task)
    eval_a, eval_b = model(batch, deterministic=True), model(batch, deterministic=True)
    np.testing.assert_array_equal(eval_a, eval_b)
    # Compiled: dropout's random ops are slow to compile one by one.
    train = nnx.jit(lambda model, batch: model(batch, deterministic=False))
    train_a, train_b = train(model, batch), train(model, batch)
    assert not np.allclose(train_a, eval_a, atol=1e-4)
    assert not np.allclose(train_a, train_b, atol=1e-4)


@pytest.mark.parametrize(
    ("config", "task", "message"),
    [
        (
            {"name": "transformer"},
            Task("classify"),
            "unknown model 'transformer'; valid models: "
            "encoder_classifier, decoder_lm, encoder_decoder, rnn_seq2seq",
        ),
        (
            {"name": "decoder_lm", "layers": 2},
            Task("lm"),
            "model.layers: unknown key; did you mean model.num_layers",
        ),
        ({"features": 8}, Task("lm"), "unknown model None"),
        (
            {"name": "decoder_lm", "attention": {"positional": "t6"}},
            Task("lm"),
            "model.attention.positional: 't6' is not valid; did you mean 't5'",
        ),
        (
            {"name": "decoder_lm", "attention": {"score": "dotty"}},
            Task("lm"),
            "model.attention.score: unknown score 'dotty'",
        ),
        (
            {"name": "decoder_lm", "attention": {"weighting": "hardmax"}},
            Task("lm"),
            "unknown weighting",
        ),
        (
            {"name": "decoder_lm", "attention": {"mask": "window(3)"}},
            Task("lm"),
            "unknown mask 'window'",
        ),
        ({"name": "decoder_lm", "dtype": "float16"}, Task("lm"), "model.dtype: 'float16' is not"),
        ({"name": "decoder_lm"}, Task("classify"), "does not handle task kind 'classify'"),
        ({"name": "encoder_decoder"}, Task("lm"), "handles seq2seq"),
        ({"name": "encoder_classifier"}, Task("translate"), "task.kind='translate'"),
        ({"name": "encoder_classifier", "pool": "max"}, Task("classify"), "model.pool: 'max'"),
        ({"name": "encoder_classifier", "pool": "mean"}, Task("tag"), "pool='none'"),
        ({"name": "rnn_seq2seq", "cell": "rnn"}, Task("seq2seq"), "model.cell: 'rnn'"),
        (
            {"name": "rnn_seq2seq", "attention": {"score": "concat"}},
            Task("seq2seq"),
            "model.attention.score: 'concat'",
        ),
        ({"name": "rnn_seq2seq", "hidden_features": 7}, Task("seq2seq"), "must be even"),
        ({"name": "decoder_lm", "num_heads": 3}, Task("lm"), "divisible by num_heads=3"),
        ({"name": "decoder_lm"}, Task("lm", input_length=0), "task.input_length"),
    ],
)
def test_bad_configs_raise_clear_errors(config, task, message):
    with pytest.raises(ValueError, match=message):
        attn.models.build_model(config, task, rngs=nnx.Rngs(0))


def test_bad_batches_and_calls_raise():
    model, _ = build("encoder_classifier", "classify")
    with pytest.raises(ValueError, match="batch lacks 'inputs'"):
        model({"tokens": np.ones((2, 7), np.int32)}, deterministic=True)
    with pytest.raises(ValueError, match="rank 2"):
        model({"inputs": np.ones((7,), np.int32)}, deterministic=True)
    with pytest.raises(NotImplementedError, match="decoder_lm"):
        model.sample(np.ones((2, 3), np.int32), 4, jax.random.key(0))
    lm, _ = build("decoder_lm", "lm", positional="learned")
    with pytest.raises(ValueError, match="learned position table"):
        lm.sample(np.ones((2, 5), np.int32), 4, jax.random.key(0))
    with pytest.raises(ValueError, match="num_tokens"):
        lm.sample(np.ones((2, 5), np.int32), 0, jax.random.key(0))


def test_alibi_models_run_the_chunked_kernel():
    """ALiBi used to ride on a score wrapper, which only the dense path could run: now it is a
    bias rule, so an explicit implementation='chunked' runs (and equals dense)."""
    chunked, task = build("decoder_lm", "lm", positional="alibi", implementation="chunked")
    dense, _ = build("decoder_lm", "lm", positional="alibi", implementation="dense")
    batch = make_batch(task)
    np.testing.assert_allclose(
        chunked(batch, deterministic=True), dense(batch, deterministic=True), atol=1e-5
    )
