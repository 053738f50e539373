"""Decoder-only language model: causal Transformer, next-token logits, KV-cache sampling."""

from __future__ import annotations

import functools

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
from attn.models.decoding import choose_tokens, decode_loop
from attn.models.embedding import Embedder
from attn.models.stacks import DTYPES, TransformerOptions, build_decoder
from attn.models.task import TaskInfo

__all__ = ["DecoderLM"]

Array = jax.Array


class DecoderLM(TaskModel):
    """``inputs [B, T] -> logits [B, T, V]`` for the next token at every position.

    Keys that are padding (id 0) are masked as well as future ones. The embedding table covers
    both vocabularies, so sampled target ids can be fed back as inputs. With
    ``positional="learned"`` sequences are limited to ``task.input_length`` tokens.
    """

    kinds = ("lm",)
    Options = TransformerOptions

    def __init__(self, config: TransformerOptions, task: TaskInfo, *, rngs: nnx.Rngs):
        dtype = DTYPES[config.dtype]
        self.embed = Embedder(
            max(task.input_vocab_size, task.target_vocab_size),
            config.features,
            positional=config.attention.positional,
            max_length=task.input_length,
            dropout_rate=config.dropout_rate,
            dtype=dtype,
            rngs=rngs,
        )
        self.decoder = build_decoder(config, cross_attention=False, rngs=rngs)
        self.head = nnx.Linear(config.features, task.target_vocab_size, dtype=dtype, rngs=rngs)

    def _forward(self, tokens_bt: Array, deterministic: bool) -> Array:
        x_btd = self.embed(tokens_bt, deterministic=deterministic)
        h_btd = self.decoder(x_btd, mask=padding_mask(tokens_bt != 0), deterministic=deterministic)
        return self.head(h_btd).astype(jnp.float32)

    def __call__(self, batch: Batch, *, deterministic: bool) -> Array:
        return self._forward(batch_array(batch, "inputs", 2), deterministic)

    def predict(self, batch: Batch) -> Array:
        logits = jit_forward(self, {"inputs": batch_array(batch, "inputs", 2)})
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def attention_maps(self, batch: Batch) -> dict[str, Array]:
        return _jit_attention_maps(self, batch_array(batch, "inputs", 2))

    def sample(self, prompt: Array, num_tokens: int, rng: Array, temperature: float = 1.0) -> Array:
        """``prompt [B, P]`` followed by ``num_tokens`` tokens drawn one at a time with a KV
        cache, int32 ``[B, P + num_tokens]``. ``temperature <= 0`` is greedy. Zeros in the
        prompt are padding, masked as keys as in :meth:`__call__`: left-pad prompts of
        different lengths. Compiled once per prompt shape and ``num_tokens``."""
        prompt = batch_array({"prompt": prompt}, "prompt", 2)
        if not isinstance(num_tokens, int) or num_tokens < 1:
            raise ValueError(f"num_tokens must be a positive int, got {num_tokens!r}")
        self.embed.check_length(prompt.shape[1] + num_tokens)
        return _jit_sample(self, prompt, num_tokens, rng, jnp.float32(temperature))

    def _decode(self, tokens_bt: Array, start: Array, key_valid_bl: Array) -> Array:
        """Logits ``[B, T_new, V]`` for tokens at ``start, ...``, appended to the KV cache."""
        x_btd = self.embed(tokens_bt, start=start, deterministic=True)
        h_btd = self.decoder(
            x_btd, mask=padding_mask(key_valid_bl), decode=True, deterministic=True
        )
        return self.head(h_btd).astype(jnp.float32)


@nnx.jit
def _jit_attention_maps(model: DecoderLM, tokens_bt: Array) -> dict[str, Array]:
    return record_attention(model, "_forward", tokens_bt, True)


@functools.partial(nnx.jit, static_argnames="num_tokens")
def _jit_sample(
    model: DecoderLM, prompt_bp: Array, num_tokens: int, rng: Array, temperature: Array
) -> Array:
    B, P = prompt_bp.shape
    # Decode on a copy: the cache must not become part of the caller's model.
    model = nnx.merge(*nnx.split(model))
    model.decoder.init_cache(B, P + num_tokens)
    key_valid_bl = jnp.zeros((B, P + num_tokens), bool).at[:, :P].set(prompt_bp != 0)
    rngs = jax.random.split(rng, num_tokens)
    first_b = choose_tokens(model._decode(prompt_bp, 0, key_valid_bl)[:, -1], rngs[0], temperature)

    def step(model, key_valid_bl, tokens_b, position):
        key_valid_bl = key_valid_bl.at[:, position].set(tokens_b != 0)
        logits_bv = model._decode(tokens_b[:, None], position, key_valid_bl)[:, 0]
        return logits_bv, key_valid_bl, ()

    rest_bn, _ = decode_loop(
        model,
        step,
        key_valid_bl,
        first_b,
        P + jnp.arange(num_tokens - 1),
        rngs=rngs[1:],
        temperature=temperature,
    )
    return jnp.concatenate([prompt_bp, first_b[:, None], rest_bn], axis=1)
