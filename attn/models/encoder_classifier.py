"""Transformer encoder with a classification head (pooled) or a tagging head (per token)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from attn.models.base import (
    Batch,
    TaskModel,
    batch_array,
    jit_forward,
    padding_mask,
    record_attention,
)
from attn.models.embedding import Embedder
from attn.models.options import option
from attn.models.stacks import DTYPES, TransformerOptions, build_encoder
from attn.models.task import TaskInfo

__all__ = ["EncoderClassifier", "EncoderClassifierOptions"]

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class EncoderClassifierOptions(TransformerOptions):
    """The Transformer options and ``pool``: ``"mean"``, ``"cls"`` or ``"none"`` (per-token
    logits); ``None`` picks by task kind ("none" for tagging, "mean" for classification)."""

    pool: str | None = option(None, choices=("mean", "cls", "none"))


class EncoderClassifier(TaskModel):
    """Embed, encode bidirectionally (padding keys masked), then

    * ``pool="mean"``: mean over real tokens -> logits ``[B, C]`` (classify, the default);
    * ``pool="cls"``: a ``[CLS]`` token (id ``input_vocab_size``) is prepended and its output
      read -> ``[B, C]`` (classify);
    * ``pool="none"``: per-token logits ``[B, T, V]`` (tag, the default there).
    """

    kinds = ("classify", "tag")
    Options = EncoderClassifierOptions

    def __init__(self, config: EncoderClassifierOptions, task: TaskInfo, *, rngs: nnx.Rngs):
        pool = config.pool or ("none" if task.kind == "tag" else "mean")
        if (task.kind == "tag") != (pool == "none"):
            raise ValueError(
                f"model.pool={pool!r} does not fit task kind {task.kind!r}: tagging needs "
                "pool='none', classification 'mean' or 'cls'"
            )
        self.pool = pool
        self.cls_id = task.input_vocab_size
        extra = 1 if pool == "cls" else 0
        dtype = DTYPES[config.dtype]
        self.embed = Embedder(
            task.input_vocab_size + extra,
            config.features,
            positional=config.attention.positional,
            max_length=task.input_length + extra,
            dropout_rate=config.dropout_rate,
            dtype=dtype,
            rngs=rngs,
        )
        self.encoder = build_encoder(config, rngs=rngs)
        self.head = nnx.Linear(config.features, task.target_vocab_size, dtype=dtype, rngs=rngs)

    def _tokens(self, batch: Batch) -> Array:
        tokens_bt = batch_array(batch, "inputs", 2)
        if self.pool == "cls":
            cls_b1 = jnp.full((tokens_bt.shape[0], 1), self.cls_id, jnp.int32)
            tokens_bt = jnp.concatenate([cls_b1, tokens_bt], axis=1)
        return tokens_bt

    def _encode(self, tokens_bt: Array, deterministic: bool) -> Array:
        valid_bt = tokens_bt != 0
        x_btd = self.embed(tokens_bt, deterministic=deterministic)
        return self.encoder(x_btd, mask=padding_mask(valid_bt), deterministic=deterministic)

    def __call__(self, batch: Batch, *, deterministic: bool) -> Array:
        tokens_bt = self._tokens(batch)
        h_btd = self._encode(tokens_bt, deterministic)
        if self.pool == "cls":
            h_btd = h_btd[:, 0]
        elif self.pool == "mean":
            valid_bt1 = (tokens_bt != 0)[..., None]
            count_b1 = jnp.maximum(valid_bt1.sum(axis=1), 1)  # an all-padding row pools to 0
            h_btd = jnp.where(valid_bt1, h_btd, 0).sum(axis=1) / count_b1
        return self.head(h_btd).astype(jnp.float32)

    def predict(self, batch: Batch) -> Array:
        logits = jit_forward(self, {"inputs": batch_array(batch, "inputs", 2)})
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def attention_maps(self, batch: Batch) -> dict[str, Array]:
        return _jit_attention_maps(self, self._tokens(batch))


@nnx.jit
def _jit_attention_maps(model: EncoderClassifier, tokens_bt: Array) -> dict[str, Array]:
    return record_attention(model, "_encode", tokens_bt, True)
