"""Vision Transformer (Dosovitskiy et al. 2021): image patches through an :mod:`attn.nn`
encoder, pooled into class logits."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from attn.models.base import Batch, TaskModel, image_array, jit_forward, record_attention
from attn.models.image_encoders import PatchEmbedder
from attn.models.options import option
from attn.models.stacks import DTYPES, TransformerOptions, build_encoder
from attn.models.task import TaskInfo

__all__ = ["ViT", "ViTOptions"]

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ViTOptions(TransformerOptions):
    """The Transformer options, ``patch_size`` (must divide the image's sides) and ``pool``:
    ``"cls"`` reads a prepended ``[CLS]`` token, ``"mean"`` averages the patches.
    ``attention.positional`` ``"sinusoidal"`` is the 2-D encoding of the patch grid."""

    patch_size: int = option(4, minimum=1)
    pool: str = option("cls", choices=("cls", "mean"))


class ViT(TaskModel):
    """``images [B, H, W, C]`` -> class logits ``[B, C]``; every score, mask, weighting and
    implementation of :mod:`attn` works in its encoder (``model.attention``).

    ``attention_maps`` gives ``"encoder/layer{i}/self"`` ``[B, N, 1 + P, 1 + P]`` with
    ``pool="cls"`` (row 0 is the CLS token) or ``[B, N, P, P]`` with ``"mean"``.
    """

    kinds = ("classify",)
    input_kinds = ("image",)
    Options = ViTOptions

    def __init__(self, config: ViTOptions, task: TaskInfo, *, rngs: nnx.Rngs):
        assert task.image_shape is not None  # check_task guarantees it for input_kinds
        dtype = DTYPES[config.dtype]
        self.image_shape = task.image_shape
        self.pool = config.pool
        self.embed = PatchEmbedder(
            task.image_shape,
            config.patch_size,
            config.features,
            positional=config.attention.positional,
            cls_token=config.pool == "cls",
            dropout_rate=config.dropout_rate,
            dtype=dtype,
            rngs=rngs,
        )
        self.grid_shape, self.cell_size = self.embed.grid_shape, self.embed.cell_size
        self.encoder = build_encoder(config, rngs=rngs)
        self.head = nnx.Linear(config.features, task.target_vocab_size, dtype=dtype, rngs=rngs)

    def _encode(self, images_bhwc: Array, deterministic: bool) -> Array:
        x_bpd = self.embed(images_bhwc, deterministic=deterministic)
        return self.encoder(x_bpd, deterministic=deterministic)

    def __call__(self, batch: Batch, *, deterministic: bool) -> Array:
        h_bpd = self._encode(image_array(batch, self.image_shape), deterministic)
        pooled_bd = h_bpd[:, 0] if self.pool == "cls" else h_bpd.mean(axis=1)
        return self.head(pooled_bd).astype(jnp.float32)

    def predict(self, batch: Batch) -> Array:
        logits = jit_forward(self, {"inputs": image_array(batch, self.image_shape)})
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def attention_maps(self, batch: Batch) -> dict[str, Array]:
        return _jit_attention_maps(self, image_array(batch, self.image_shape))


@nnx.jit
def _jit_attention_maps(model: ViT, images_bhwc: Array) -> dict[str, Array]:
    return record_attention(model, "_encode", images_bhwc, True)
