"""Keyword spotting with a Transformer encoder over audio (after Berg et al. 2021, "Keyword
Transformer"): the spectrogram's subsampled frames are the tokens, pooled into class logits."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from attn.models.audio_encoders import ConvSubsampler
from attn.models.base import Batch, TaskModel, audio_array, padding_mask, record_attention
from attn.models.options import option
from attn.models.stacks import DTYPES, TransformerOptions, build_encoder
from attn.models.task import TaskInfo

__all__ = ["KeywordTransformer", "KeywordTransformerOptions"]

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class KeywordTransformerOptions(TransformerOptions):
    """The Transformer options and the subsampler's ``conv_channels``."""

    conv_channels: int = option(16, minimum=1)


class KeywordTransformer(TaskModel):
    """``audio [B, frames, bins]`` with ``input_lengths [B]`` -> class logits ``[B, C]``.

    The frames go through :class:`~attn.models.audio_encoders.ConvSubsampler` (step ``s``
    covers frames ``[s * frame_stride, (s + 1) * frame_stride)``) and an :mod:`attn.nn`
    encoder whose padded steps are masked as keys; the real steps' outputs are averaged.
    KWT reads a class token instead; the mean needs no extra position and let a padded clip
    of any length pool only its own frames. ``attention_maps`` gives
    ``"encoder/layer{i}/self"`` ``[B, N, S, S]``.
    """

    kinds = ("classify",)
    input_kinds = ("audio",)
    Options = KeywordTransformerOptions

    def __init__(self, config: KeywordTransformerOptions, task: TaskInfo, *, rngs: nnx.Rngs):
        assert task.audio_shape is not None  # check_task guarantees it for input_kinds
        dtype = DTYPES[config.dtype]
        self.audio_shape = task.audio_shape
        self.embed = ConvSubsampler(
            task.audio_shape,
            config.conv_channels,
            config.features,
            positional=config.attention.positional,
            dropout_rate=config.dropout_rate,
            dtype=dtype,
            rngs=rngs,
        )
        self.frame_stride = self.embed.frame_stride
        self.encoder = build_encoder(config, rngs=rngs)
        self.head = nnx.Linear(config.features, task.target_vocab_size, dtype=dtype, rngs=rngs)

    def _encode(self, audio: tuple[Array, Array], deterministic: bool) -> tuple[Array, Array]:
        x_bsd, valid_bs = self.embed(*audio, deterministic=deterministic)
        h_bsd = self.encoder(x_bsd, mask=padding_mask(valid_bs), deterministic=deterministic)
        return h_bsd, valid_bs

    def __call__(self, batch: Batch, *, deterministic: bool) -> Array:
        h_bsd, valid_bs = self._encode(audio_array(batch, self.audio_shape), deterministic)
        valid_bs1 = valid_bs[..., None]
        count_b1 = jnp.maximum(valid_bs1.sum(axis=1), 1)  # an all-padding row pools to 0
        pooled_bd = jnp.where(valid_bs1, h_bsd, 0).sum(axis=1) / count_b1
        return self.head(pooled_bd).astype(jnp.float32)

    def predict(self, batch: Batch) -> Array:
        return _jit_predict(self, audio_array(batch, self.audio_shape))

    def attention_maps(self, batch: Batch) -> dict[str, Array]:
        return _jit_attention_maps(self, audio_array(batch, self.audio_shape))


@nnx.jit
def _jit_predict(model: KeywordTransformer, audio: tuple[Array, Array]) -> Array:
    inputs_bf, lengths_b = audio
    logits = model({"inputs": inputs_bf, "input_lengths": lengths_b}, deterministic=True)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


@nnx.jit
def _jit_attention_maps(model: KeywordTransformer, audio: tuple[Array, Array]) -> dict:
    return record_attention(model, "_encode", audio, True)
