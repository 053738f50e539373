"""The speech recognisers 'las' and 'speech_transformer' on a stand-in audio task."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import attn.models
from attn.data.tokenizers import EOS_ID
from attn.models.base import jit_forward
from attn.models.decoding import EOS_ID as DECODING_EOS_ID

FRAMES, BINS, VOCAB, U = 19, 8, 7, 5
TASK = attn.models.TaskInfo("seq2seq", 0, VOCAB, 0, U, audio_shape=(FRAMES, BINS))
SIZES = {
    "las": dict(
        embed_features=8,
        hidden_features=16,
        pyramid_layers=1,
        attention=dict(location_filters=4, location_width=5),
    ),
    "speech_transformer": dict(
        num_layers=1, features=16, num_heads=2, mlp_features=32, conv_channels=4
    ),
}
# Lengths: full, partial (odd, not a multiple of the stride), and an all-padding row.
LENGTHS = np.array([FRAMES, 10, 0], np.int32)


def build(name, task=TASK, seed=0, **overrides):
    config = {"name": name, **SIZES[name], **overrides}
    return attn.models.build_model(config, task, rngs=nnx.Rngs(seed))


def make_batch(seed=0, lengths=LENGTHS, vocab=VOCAB, target_length=U):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(len(lengths), FRAMES, BINS)).astype(np.float32)
    features *= np.arange(FRAMES)[None, :, None] < lengths[:, None, None]  # zeros after the end
    targets = rng.integers(1, vocab, (len(lengths), target_length)).astype(np.int32)
    targets[:, -1] = 0
    targets[:, -2] = EOS_ID
    return {"inputs": features, "input_lengths": lengths, "targets": targets}


@pytest.fixture(scope="module", params=["las", "speech_transformer"])
def model(request):
    return build(request.param)


def test_models_are_registered_for_audio_seq2seq():
    for name in ("las", "speech_transformer"):
        model_class = attn.models.MODELS[name]
        assert model_class.kinds == ("seq2seq",) and model_class.input_kinds == ("audio",)
        config = attn.models.default_config(name)
        assert config.beam_size == 1 and config.length_penalty == 1.0
    assert attn.models.default_config("las").attention.score == "location_aware"
    with pytest.raises(ValueError, match="reads audio inputs, but the task's inputs are tokens"):
        attn.models.build_model(
            {"name": "las"}, attn.models.TaskInfo("seq2seq", 5, 5, 5, 5), rngs=nnx.Rngs(0)
        )
    assert TASK.input_kind == "audio"


def test_eos_matches_the_tokenizers():
    assert DECODING_EOS_ID == EOS_ID


def test_shapes_and_attention_over_reduced_frames(model):
    batch = make_batch()
    logits = jit_forward(model, batch)
    assert logits.shape == (3, U, VOCAB) and logits.dtype == jnp.float32
    assert np.isfinite(logits).all()  # the all-padding row included
    tokens, greedy_logits = model.greedy_decode(batch)
    assert tokens.shape == (3, U) and tokens.dtype == jnp.int32
    assert greedy_logits.shape == (3, U, VOCAB) and np.isfinite(greedy_logits).all()
    assert model.predict(batch).shape == (3, U)
    steps = -(-FRAMES // model.frame_stride)
    cross = [w for name, w in model.attention_maps(batch).items() if "self" not in name]
    assert cross and all(w.shape[0] == 3 and w.shape[2:] == (U, steps) for w in cross)
    for weights in cross:
        # Steps from a padded frame on get no weight; the all-padding row none at all.
        real = -(-10 // model.frame_stride)
        np.testing.assert_array_equal(weights[1, ..., real:], 0.0)
        np.testing.assert_array_equal(weights[2], 0.0)
        np.testing.assert_allclose(weights[:2].sum(-1), 1.0, rtol=1e-5)


def test_padded_frames_do_not_matter(model):
    batch = make_batch()
    changed = dict(batch, inputs=batch["inputs"].copy())
    padded = np.arange(FRAMES)[None, :] >= LENGTHS[:, None]
    changed["inputs"][padded] = 100.0
    np.testing.assert_allclose(jit_forward(model, changed), jit_forward(model, batch), atol=1e-5)
    np.testing.assert_array_equal(model.predict(changed), model.predict(batch))


def test_decoder_is_causal(model):
    batch = make_batch()
    changed = dict(batch, targets=batch["targets"].copy())
    changed["targets"][:, 3] = (changed["targets"][:, 3] + 1) % VOCAB
    before, after = jit_forward(model, batch), jit_forward(model, changed)
    np.testing.assert_allclose(after[:, :4], before[:, :4], atol=1e-6)
    assert not np.allclose(after[:2, 4], before[:2, 4])


def test_greedy_is_the_argmax_of_teacher_forcing_on_its_own_output(model):
    batch = make_batch()
    tokens, greedy_logits = model.greedy_decode(batch)
    forced = jit_forward(model, dict(batch, targets=tokens))
    np.testing.assert_allclose(greedy_logits, forced, atol=1e-5)
    np.testing.assert_array_equal(tokens, jnp.argmax(forced, axis=-1))


def test_jitted_gradient_is_finite(model):
    batch = make_batch()

    @nnx.jit
    def loss_and_grads(model, batch):
        def loss(model):
            logits = model(batch, deterministic=False)
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
            return jnp.mean(losses)

        return nnx.value_and_grad(loss)(model)

    value, grads = loss_and_grads(model, batch)
    leaves = jax.tree.leaves(grads)
    assert np.isfinite(value) and all(np.isfinite(leaf).all() for leaf in leaves)
    assert any(np.abs(leaf).max() > 0 for leaf in leaves)


def _through_eos(tokens):
    """The tokens up to and including the first EOS (all if there is none)."""
    tokens = list(np.asarray(tokens))
    return tokens[: tokens.index(EOS_ID) + 1] if EOS_ID in tokens else tokens


def _log_prob(model, batch, tokens_bu):
    """Teacher-forced log-probability of each row of ``tokens`` through its first EOS, and that
    length."""
    log_probs = jax.nn.log_softmax(jit_forward(model, dict(batch, targets=tokens_bu)))
    totals, lengths = [], []
    for row, tokens in enumerate(np.asarray(tokens_bu)):
        length = len(_through_eos(tokens))
        totals.append(sum(float(log_probs[row, i, tokens[i]]) for i in range(length)))
        lengths.append(length)
    return np.array(totals), np.array(lengths)


def test_beam_of_one_is_greedy_and_wider_beams_score_higher(model):
    batch = make_batch()
    greedy = model.greedy_decode(batch)[0]
    beam_one, log_prob_one = model.beam_decode(batch, beam_size=1)
    for g, b in zip(greedy, beam_one, strict=True):
        assert _through_eos(g) == _through_eos(b)
    beam_tokens, beam_log_prob = model.beam_decode(batch, beam_size=4, length_penalty=0.0)
    greedy_log_prob, _ = _log_prob(model, batch, greedy)
    forced_log_prob, _ = _log_prob(model, batch, beam_tokens)
    np.testing.assert_allclose(beam_log_prob, forced_log_prob, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(log_prob_one, greedy_log_prob, rtol=1e-4, atol=1e-4)
    assert np.all(beam_log_prob >= greedy_log_prob - 1e-4)


def test_predict_uses_the_beam_size_option():
    wide = build("las", beam_size=2)
    batch = make_batch()
    np.testing.assert_array_equal(wide.predict(batch), wide.beam_decode(batch)[0])


def test_full_width_beam_finds_the_best_hypothesis():
    """With a beam as wide as every hypothesis, beam search is exhaustive search."""
    vocab, length = 3, 3
    task = attn.models.TaskInfo("seq2seq", 0, vocab, 0, length, audio_shape=(FRAMES, BINS))
    model = build("las", task, seed=2)
    batch = make_batch(vocab=vocab, target_length=length)
    hypotheses = {
        tuple(_through_eos(seq)) for seq in itertools.product(range(vocab), repeat=length)
    }
    rows = np.array([list(h) + [0] * (length - len(h)) for h in sorted(hypotheses)], np.int32)
    for example in range(2):  # the all-padding row is not a recording
        many = {
            "inputs": np.repeat(batch["inputs"][example : example + 1], len(rows), axis=0),
            "input_lengths": np.repeat(batch["input_lengths"][example], len(rows)),
            "targets": rows,
        }
        totals, lengths = _log_prob(model, many, rows)
        for length_penalty in (0.0, 1.0):
            tokens, log_prob = model.beam_decode(batch, vocab**length, length_penalty)
            best = np.argmax(totals / lengths.astype(np.float64) ** length_penalty)
            np.testing.assert_array_equal(tokens[example], rows[best])
            np.testing.assert_allclose(log_prob[example], totals[best], rtol=1e-4, atol=1e-4)
