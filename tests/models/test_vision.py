"""Image models: 2-D positions, patch embedding, the ViT and the two captioners, and the checks
that keep image models and token tasks apart."""

from __future__ import annotations

import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import attn
from attn import models
from attn.models.base import jit_forward
from attn.models.image_encoders import PatchEmbedder
from attn.train import load_config
from attn.train.config import base_config, validate

VIT_DIGITS = str(Path(__file__).resolve().parents[2] / "experiments" / "vit_digits.py")


def _task(kind: str, image_shape=(16, 16, 3), target_length: int = 6):
    return types.SimpleNamespace(
        kind=kind,
        input_vocab_size=0,
        target_vocab_size=9,
        input_length=0,
        target_length=target_length,
        image_shape=image_shape,
    )


def _images(batch: int = 3, shape=(16, 16, 3), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (batch, *shape)).astype(np.float32)


def test_sinusoidal_2d_encodes_row_then_column():
    codes = np.asarray(attn.positional.sinusoidal_2d(3, 4, 16))
    assert codes.shape == (12, 16)
    rows = np.asarray(attn.positional.sinusoidal(jnp.arange(3), 8))
    columns = np.asarray(attn.positional.sinusoidal(jnp.arange(4), 8))
    for p in range(12):
        np.testing.assert_allclose(codes[p], np.concatenate([rows[p // 4], columns[p % 4]]))
    with pytest.raises(ValueError, match="multiple of 4"):
        attn.positional.sinusoidal_2d(2, 2, 6)


def test_patch_embedding_is_a_strided_convolution():
    embed = PatchEmbedder((8, 12, 3), 4, 5, positional="none", rngs=nnx.Rngs(0))
    images = _images(2, (8, 12, 3))
    patches = np.asarray(embed.patches(jnp.asarray(images)))
    assert patches.shape == (2, 6, 48) and embed.grid_shape == (2, 3)
    np.testing.assert_array_equal(patches[1, 4], images[1, 4:8, 4:8].reshape(-1))  # row 1, col 1
    kernel = embed.project.kernel[...].reshape(4, 4, 3, 5)
    conv = jax.lax.conv_general_dilated(
        jnp.asarray(images), kernel, (4, 4), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(
        embed(jnp.asarray(images)),
        conv.reshape(2, 6, 5) + embed.project.bias[...],
        rtol=1e-5,
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="patch_size=5 must divide"):
        PatchEmbedder((8, 12, 3), 5, 5, positional="none", rngs=nnx.Rngs(0))


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_vit_classifies_and_records_patch_attention(pool):
    options = {"name": "vit", "patch_size": 4, "pool": pool, "num_layers": 2, "features": 8}
    model = models.build_model(options, _task("classify"), rngs=nnx.Rngs(0))
    batch = {"inputs": _images()}
    logits = jit_forward(model, batch)
    assert logits.shape == (3, 9) and model.predict(batch).shape == (3,)
    tokens = 16 + (pool == "cls")
    maps = model.attention_maps(batch)
    assert set(maps) == {"encoder/layer0/self", "encoder/layer1/self"}
    assert maps["encoder/layer1/self"].shape == (3, 4, tokens, tokens)


@pytest.mark.parametrize(
    "options",
    [
        {"name": "transformer_captioner", "patch_size": 4, "num_layers": 1, "features": 16},
        {"name": "show_attend_tell", "embed_features": 8, "hidden_features": 16},
    ],
    ids=["transformer", "show_attend_tell"],
)
def test_captioners_decode_greedily_and_align_each_word(options):
    model = models.build_model(options, _task("seq2seq"), rngs=nnx.Rngs(2))
    batch = {"inputs": _images(), "targets": np.ones((3, 6), np.int32)}
    tokens, logits = model.greedy_decode(batch)
    assert tokens.shape == (3, 6)
    np.testing.assert_array_equal(tokens, jnp.argmax(logits, axis=-1))
    # The greedy words fed back teacher-forced give the same logits: decoding is not
    # teacher-forced on the references, and the KV cache (or recurrence) is exact.
    forced = jit_forward(model, {"inputs": batch["inputs"], "targets": tokens})
    np.testing.assert_allclose(forced, logits, atol=1e-4)
    alignment = np.asarray(model.word_alignment(batch))
    grid = model.grid_shape
    heads = 4 if options["name"] == "transformer_captioner" else 1  # 1 layer x 4 heads
    assert alignment.shape == (3, heads, 6, grid[0] * grid[1]) and model.cell_size == (4, 4)
    np.testing.assert_allclose(alignment.sum(axis=-1), 1.0, rtol=1e-5)


def test_image_models_and_token_tasks_do_not_mix():
    token_task = types.SimpleNamespace(
        kind="classify", input_vocab_size=7, target_vocab_size=3, input_length=5, target_length=1
    )
    with pytest.raises(ValueError, match="reads image inputs, but the task's inputs are tokens"):
        models.build_model({"name": "vit"}, token_task, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="reads tokens inputs, but the task's inputs are image"):
        models.build_model({"name": "encoder_classifier"}, _task("classify"), rngs=nnx.Rngs(0))


def test_config_errors_of_image_experiments_come_before_any_data():
    config = load_config(f"{VIT_DIGITS}:smoke")
    config.model.patch_size = 3
    with pytest.raises(ValueError, match=r"model\.patch_size=3 must divide the image's height"):
        validate(config)
    config = base_config(model="encoder_classifier")
    config.data.update(name="digits")
    with pytest.raises(ValueError, match="reads tokens inputs, but dataset 'digits' gives image"):
        validate(config)
    config = load_config(f"{VIT_DIGITS}:smoke")
    config.train.best_metric = "bleu4"
    with pytest.raises(ValueError, match="bleu4"):
        validate(config)
