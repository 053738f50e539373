"""attention_maps: names, shapes, and rows that are distributions over the visible keys."""

import numpy as np
import pytest

from .common import SMALL, Task, build, make_batch

# Trains or decodes each model before reading its maps.
pytestmark = pytest.mark.slow

N = SMALL["num_heads"]


def check_rows(weights, visible):
    """Zero on invisible keys; each row sums to 1 over the visible ones."""
    weights = np.asarray(weights)
    visible = np.broadcast_to(visible, weights.shape)
    assert (weights[~visible] == 0).all()
    assert (weights >= 0).all()
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)


def key_visible(tokens):
    return (np.asarray(tokens) != 0)[:, None, None, :]


@pytest.mark.parametrize("weighting", ["softmax", "sparsemax"])
def test_encoder_maps(weighting):
    model, task = build("encoder_classifier", "tag", num_layers=2, weighting=weighting)
    batch = make_batch(task)
    maps = model.attention_maps(batch)
    assert sorted(maps) == ["encoder/layer0/self", "encoder/layer1/self"]
    for weights in maps.values():
        assert weights.shape == (3, N, 7, 7)
        check_rows(weights, key_visible(batch["inputs"]))


def test_cls_pooling_maps_include_the_cls_token():
    model, task = build("encoder_classifier", "classify", pool="cls")
    maps = model.attention_maps(make_batch(task))
    assert maps["encoder/layer0/self"].shape == (3, N, 8, 8)


def test_decoder_lm_maps_are_causal():
    model, task = build("decoder_lm", "lm", num_layers=2)
    batch = make_batch(task)
    maps = model.attention_maps(batch)
    assert sorted(maps) == ["decoder/layer0/self", "decoder/layer1/self"]
    causal = np.tril(np.ones((7, 7), bool))
    for weights in maps.values():
        assert weights.shape == (3, N, 7, 7)
        check_rows(weights, key_visible(batch["inputs"]) & causal)


def test_encoder_decoder_maps_follow_greedy_decoding():
    model, task = build("encoder_decoder", "seq2seq", num_layers=2)
    batch = make_batch(task)
    maps = model.attention_maps(batch)
    assert sorted(maps) == [
        "decoder/layer0/cross",
        "decoder/layer0/self",
        "decoder/layer1/cross",
        "decoder/layer1/self",
        "encoder/layer0/self",
        "encoder/layer1/self",
    ]
    other = model.attention_maps(dict(batch, targets=np.ones_like(batch["targets"])))
    for name, weights in maps.items():
        np.testing.assert_array_equal(weights, other[name], err_msg=f"{name} read the targets")
    U, T = task.target_length, task.input_length
    predictions = np.asarray(model.predict(batch))
    decoder_inputs = np.concatenate([np.full((3, 1), task.target_vocab_size), predictions], 1)
    for i in range(2):
        assert maps[f"encoder/layer{i}/self"].shape == (3, N, T, T)
        check_rows(maps[f"encoder/layer{i}/self"], key_visible(batch["inputs"]))
        assert maps[f"decoder/layer{i}/cross"].shape == (3, N, U, T)
        check_rows(maps[f"decoder/layer{i}/cross"], key_visible(batch["inputs"]))
        assert maps[f"decoder/layer{i}/self"].shape == (3, N, U, U)
        visible = key_visible(decoder_inputs[:, :U]) & np.tril(np.ones((U, U), bool))
        check_rows(maps[f"decoder/layer{i}/self"], visible)


@pytest.mark.parametrize(("cell", "score"), [("gru", "additive"), ("lstm", "dot")])
def test_rnn_alignment(cell, score):
    task = Task("seq2seq")
    model, _ = build("rnn_seq2seq", "seq2seq", cell=cell, score=score)
    batch = make_batch(task)
    maps = model.attention_maps(batch)
    assert list(maps) == ["rnn/alignment"]
    assert maps["rnn/alignment"].shape == (3, 1, task.target_length, task.input_length)
    check_rows(maps["rnn/alignment"], key_visible(batch["inputs"]))
