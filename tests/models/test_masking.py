"""Padding keys are invisible, decoders are causal, and the config's extra mask is applied."""

import numpy as np
import pytest
from flax import nnx

from .common import MODEL_KINDS, build, make_batch


def real_positions(batch, name, kind):
    """Logit positions that belong to real tokens of example 0 (right-padded by 2)."""
    if kind == "classify":
        return np.s_[0]
    if kind == "seq2seq":
        return np.s_[0, : batch["targets"].shape[1] - 2]
    return np.s_[0, : batch["inputs"].shape[1] - 2]


def perturb_token_embedding(model, token: int):
    """A copy of ``model`` whose input embedding of ``token`` is moved far away."""
    model = nnx.clone(model)
    embed = model.embed if hasattr(model, "embed") else model.embed_inputs
    table = embed.tokens.embedding
    noise = np.random.default_rng(1).normal(size=table.shape[1]).astype(np.float32)
    table[...] = table[...].at[token].add(5.0 * noise)
    return model


@pytest.mark.parametrize(
    ("name", "kind", "options"),
    [*((n, k, {}) for n, k in MODEL_KINDS), ("encoder_classifier", "classify", {"pool": "cls"})],
)
def test_padding_tokens_do_not_reach_real_positions(name, kind, options):
    """Changing what a pad token (id 0) embeds to leaves every real position's logits alone,
    while changing a real token's embedding does change them (so the check can fail)."""
    model, task = build(name, kind, **options)
    batch = make_batch(task)
    where = real_positions(batch, name, kind)
    before = np.asarray(model(batch, deterministic=True))[where]
    padded = perturb_token_embedding(model, 0)
    np.testing.assert_allclose(padded(batch, deterministic=True)[where], before, atol=1e-5)
    changed = perturb_token_embedding(model, int(batch["inputs"][0, 1]))
    assert not np.allclose(changed(batch, deterministic=True)[where], before, atol=1e-4)


@pytest.mark.parametrize(("name", "kind"), [("encoder_classifier", "tag"), ("decoder_lm", "lm")])
def test_more_padding_changes_nothing(name, kind):
    """Appending pad columns keeps the logits of the existing positions."""
    model, task = build(name, kind)
    batch = make_batch(task)
    longer = dict(batch, inputs=np.pad(batch["inputs"], ((0, 0), (0, 3))))
    np.testing.assert_allclose(
        np.asarray(model(longer, deterministic=True))[:, : task.input_length],
        model(batch, deterministic=True),
        atol=1e-5,
    )


@pytest.mark.parametrize("positional", ["sinusoidal", "rope", "alibi", "learned"])
def test_decoder_lm_is_causal(positional):
    model, task = build("decoder_lm", "lm", num_layers=2, positional=positional)
    batch = make_batch(task)
    base = np.asarray(model(batch, deterministic=True))
    for t in range(task.input_length):
        inputs = batch["inputs"].copy()
        inputs[1, t] = inputs[1, t] % (task.input_vocab_size - 1) + 1  # another real token
        changed = np.asarray(model(dict(batch, inputs=inputs), deterministic=True))
        np.testing.assert_allclose(changed[1, :t], base[1, :t], atol=1e-5, err_msg=f"t={t}")
        assert not np.allclose(changed[1, t], base[1, t], atol=1e-4), f"token {t} is ignored"


@pytest.mark.parametrize(
    ("name", "options"), [("encoder_decoder", {"num_layers": 2}), ("rnn_seq2seq", {})]
)
def test_seq2seq_logits_depend_only_on_earlier_targets(name, options):
    model, task = build(name, "seq2seq", **options)
    batch = make_batch(task)
    base = np.asarray(model(batch, deterministic=True))
    for u in range(task.target_length - 1):
        targets = batch["targets"].copy()
        targets[1, u] = targets[1, u] % (task.target_vocab_size - 1) + 1
        changed = np.asarray(model(dict(batch, targets=targets), deterministic=True))
        np.testing.assert_allclose(changed[1, : u + 1], base[1, : u + 1], atol=1e-5)
        assert not np.allclose(changed[1, u + 1], base[1, u + 1], atol=1e-4)


def test_extra_mask_from_the_config_is_applied():
    """A window of one key each side: a token two steps away cannot matter after one layer."""
    model, task = build(
        "encoder_classifier", "tag", num_layers=1, mask="sliding_window(left=1, right=1)"
    )
    batch = make_batch(task)
    base = np.asarray(model(batch, deterministic=True))
    inputs = batch["inputs"].copy()
    inputs[1, 3] = inputs[1, 3] % (task.input_vocab_size - 1) + 1
    changed = np.asarray(model(dict(batch, inputs=inputs), deterministic=True))
    np.testing.assert_allclose(changed[1, [0, 1, 5, 6]], base[1, [0, 1, 5, 6]], atol=1e-5)
    assert not np.allclose(changed[1, [2, 3, 4]], base[1, [2, 3, 4]], atol=1e-4)
    maps = model.attention_maps(batch)
    distance = np.abs(np.arange(7)[:, None] - np.arange(7)[None, :])
    assert (np.asarray(maps["encoder/layer0/self"])[..., distance > 1] == 0).all()


def test_decoder_lm_masks_left_padding():
    """Causality alone hides right padding; left padding needs the padding mask."""
    model, task = build("decoder_lm", "lm")
    batch = make_batch(task)
    batch["inputs"][0] = np.roll(batch["inputs"][0], 2)  # two pads first
    before = np.asarray(model(batch, deterministic=True))[0, 2:]
    padded = perturb_token_embedding(model, 0)
    np.testing.assert_allclose(padded(batch, deterministic=True)[0, 2:], before, atol=1e-5)
