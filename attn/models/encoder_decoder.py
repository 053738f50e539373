"""Encoder-decoder Transformer for seq2seq: teacher-forced logits, greedy KV-cache decoding."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from attn.models.base import Batch, TaskModel, batch_array, padding_mask, record_attention
from attn.models.decoding import decode_loop, shift_right
from attn.models.embedding import Embedder
from attn.models.stacks import DTYPES, TransformerOptions, build_decoder, build_encoder
from attn.models.task import TaskInfo

__all__ = ["EncoderDecoder", "decoding_step"]

Array = jax.Array


class EncoderDecoder(TaskModel):
    """``inputs [B, T]`` and ``targets [B, U]`` -> logits ``[B, U, V]``, teacher-forced.

    The decoder reads ``targets`` shifted right behind a BOS token whose id is
    ``target_vocab_size`` (the target table has one extra row). Padding (id 0) is masked as
    keys on both sides; ``attention.mask`` applies to both stacks' self-attention.
    """

    kinds = ("seq2seq",)
    Options = TransformerOptions

    def __init__(self, config: TransformerOptions, task: TaskInfo, *, rngs: nnx.Rngs):
        self.bos_id = task.target_vocab_size
        self.target_length = task.target_length
        dtype = DTYPES[config.dtype]
        embed = dict(
            positional=config.attention.positional,
            dropout_rate=config.dropout_rate,
            dtype=dtype,
            rngs=rngs,
        )
        self.embed_inputs = self._input_embedder(config, task, embed)
        self.embed_targets = Embedder(
            task.target_vocab_size + 1, config.features, max_length=task.target_length, **embed
        )
        self.encoder = build_encoder(config, rngs=rngs)
        self.decoder = build_decoder(config, cross_attention=True, rngs=rngs)
        self.head = nnx.Linear(config.features, task.target_vocab_size, dtype=dtype, rngs=rngs)

    def _input_embedder(
        self, config: TransformerOptions, task: TaskInfo, embed: dict[str, Any]
    ) -> nnx.Module:
        """What turns the inputs into ``[B, T, D]`` (a subclass may read other inputs)."""
        return Embedder(
            task.input_vocab_size, config.features, max_length=task.input_length, **embed
        )

    def _inputs(self, batch: Batch) -> Array:
        return batch_array(batch, "inputs", 2)

    def _encode(self, inputs_bt: Array, deterministic: bool) -> tuple[Array, Array | None]:
        """Encoder output ``[B, T, D]`` and its cross-attention mask ``[B, 1, 1, T]``."""
        valid_bt = inputs_bt != 0
        x_btd = self.embed_inputs(inputs_bt, deterministic=deterministic)
        memory_btd = self.encoder(x_btd, mask=padding_mask(valid_bt), deterministic=deterministic)
        return memory_btd, padding_mask(valid_bt)

    def _teacher_forced(self, inputs_bt: Array, targets_bu: Array, deterministic: bool) -> Array:
        memory_btd, memory_mask = self._encode(inputs_bt, deterministic)
        decoder_inputs_bu = shift_right(targets_bu, self.bos_id)
        y_bud = self.embed_targets(decoder_inputs_bu, deterministic=deterministic)
        h_bud = self.decoder(
            y_bud,
            mask=padding_mask(decoder_inputs_bu != 0),
            context=memory_btd,
            context_mask=memory_mask,
            deterministic=deterministic,
        )
        return self.head(h_bud).astype(jnp.float32)

    def __call__(self, batch: Batch, *, deterministic: bool) -> Array:
        return self._teacher_forced(
            self._inputs(batch), batch_array(batch, "targets", 2), deterministic
        )

    def predict(self, batch: Batch) -> Array:
        """Greedy decoding of ``target_length`` tokens from the inputs alone (KV cache)."""
        return self.greedy_decode(batch)[0]

    def greedy_decode(self, batch: Batch) -> tuple[Array, Array]:
        """Greedy tokens int32 ``[B, U]`` and the logits ``[B, U, V]`` each step chose from."""
        return _jit_greedy(self, self._inputs(batch))

    def attention_maps(self, batch: Batch) -> dict[str, Array]:
        """Encoder self-attention, decoder self- and cross-attention while decoding greedily.

        They come from a teacher-forced pass over the greedy predictions, which reproduces the
        decoding steps' attention exactly (the decoder is causal).
        """
        return _jit_attention_maps(self, self._inputs(batch))


def decoding_step(
    model: EncoderDecoder, memory_btd: Array, memory_mask: Array | None
) -> tuple[EncoderDecoder, Callable[..., Any], Array]:
    """What :func:`attn.models.decoding.decode_loop` needs to decode from ``memory [B, T, D]``:
    a copy of ``model`` with an empty KV cache for ``B`` examples, the step (its outputs are the
    step's logits ``[B, V]``) and the step's first state (which cache slots are real tokens)."""
    B, U = memory_btd.shape[0], model.target_length
    # Decode on a copy: the cache must not become part of the caller's model.
    model = nnx.merge(*nnx.split(model))
    model.decoder.init_cache(B, U)

    def step(model, key_valid_bu, tokens_b, position):
        key_valid_bu = key_valid_bu.at[:, position].set(tokens_b != 0)
        y_b1d = model.embed_targets(tokens_b[:, None], start=position, deterministic=True)
        h_b1d = model.decoder(
            y_b1d,
            mask=padding_mask(key_valid_bu),
            context=memory_btd,
            context_mask=memory_mask,
            decode=True,
            deterministic=True,
        )
        logits_bv = model.head(h_b1d[:, 0]).astype(jnp.float32)
        return logits_bv, key_valid_bu, logits_bv

    return model, step, jnp.zeros((B, U), bool)


@nnx.jit
def _jit_greedy(model: EncoderDecoder, inputs: Any) -> tuple[Array, Array]:
    memory_btd, memory_mask = model._encode(inputs, True)
    copy, step, key_valid_bu = decoding_step(model, memory_btd, memory_mask)
    bos_b = jnp.full((memory_btd.shape[0],), model.bos_id, jnp.int32)
    return decode_loop(copy, step, key_valid_bu, bos_b, jnp.arange(model.target_length))


@nnx.jit
def _jit_attention_maps(model: EncoderDecoder, inputs: Any) -> dict[str, Array]:
    predictions_bu, _ = _jit_greedy(model, inputs)
    return record_attention(model, "_teacher_forced", inputs, predictions_bu, True)
