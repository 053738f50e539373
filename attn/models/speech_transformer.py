"""Speech-Transformer (Dong et al. 2018): convolutional subsampling of the audio features, then
the encoder-decoder Transformer of :mod:`attn.models.encoder_decoder` over characters."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from attn.models.audio_encoders import ConvSubsampler
from attn.models.base import Batch, audio_array, cross_attention_heads, padding_mask
from attn.models.decoding import beam_search, tile_beams
from attn.models.encoder_decoder import EncoderDecoder, decoding_step
from attn.models.options import option
from attn.models.stacks import TransformerOptions
from attn.models.task import TaskInfo

__all__ = ["SpeechTransformer", "SpeechTransformerOptions"]

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SpeechTransformerOptions(TransformerOptions):
    """The Transformer options, the subsampler's ``conv_channels``, and the decoding of
    ``predict``: ``beam_size`` (1 = greedy) with hypotheses ranked at the end by
    ``log_prob / length ** length_penalty``. ``attention.positional`` "sinusoidal" or
    "learned" is added to the subsampled frames and to the characters."""

    conv_channels: int = option(32, minimum=1)
    beam_size: int = option(1, minimum=1)
    length_penalty: float = option(1.0, minimum=0.0)


class SpeechTransformer(EncoderDecoder):
    """``audio [B, frames, bins]`` with ``input_lengths [B]`` and character ``targets [B, U]``
    -> logits ``[B, U, V]`` (teacher-forced).

    :class:`~attn.models.audio_encoders.ConvSubsampler` (encoder step ``s`` covers input frames
    ``[s * frame_stride, (s + 1) * frame_stride)``, ``frame_stride = 4``) feeds
    :class:`EncoderDecoder`'s encoder, whose padded steps are masked as keys on both sides;
    every ``model.attention`` option applies as there. ``predict`` runs a beam search of
    ``beam_size`` (greedy with a KV cache at 1), never teacher-forced.

    ``attention_maps`` holds ``"decoder/layer{i}/cross"`` ``[B, N, U, S]``: each greedy
    character's attention over the encoder steps (and the self-attention maps).
    """

    input_kinds = ("audio",)
    Options = SpeechTransformerOptions

    def __init__(self, config: SpeechTransformerOptions, task: TaskInfo, *, rngs: nnx.Rngs):
        super().__init__(config, task, rngs=rngs)
        self.beam_size, self.length_penalty = config.beam_size, config.length_penalty

    def _input_embedder(
        self, config: SpeechTransformerOptions, task: TaskInfo, embed: dict[str, Any]
    ) -> nnx.Module:
        assert task.audio_shape is not None  # check_task guarantees it for input_kinds
        self.audio_shape = task.audio_shape
        subsampler = ConvSubsampler(
            task.audio_shape, config.conv_channels, config.features, **embed
        )
        self.frame_stride = subsampler.frame_stride
        return subsampler

    def _inputs(self, batch: Batch) -> tuple[Array, Array]:  # type: ignore[override]
        return audio_array(batch, self.audio_shape)

    def _encode(  # type: ignore[override]
        self, audio: tuple[Array, Array], deterministic: bool
    ) -> tuple[Array, Array]:
        """Encoder output ``[B, S, D]`` and its cross-attention mask ``[B, 1, 1, S]``."""
        x_bsd, valid_bs = self.embed_inputs(*audio, deterministic=deterministic)
        memory_mask = padding_mask(valid_bs)
        return self.encoder(x_bsd, mask=memory_mask, deterministic=deterministic), memory_mask

    def predict(self, batch: Batch) -> Array:
        """Characters ``[B, U]`` by beam search (``beam_size``; greedy at 1); after EOS the
        beam pads with 0, greedy goes on choosing."""
        if self.beam_size == 1:
            return self.greedy_decode(batch)[0]
        return self.beam_decode(batch)[0]

    def frame_alignment(self, batch: Batch) -> Array:
        """Each greedy character's attention over the encoder steps, per cross-attention head
        ``[B, L * N, U, S]`` (layer-major; each row sums to 1)."""
        return cross_attention_heads(self.attention_maps(batch))

    def beam_decode(
        self,
        batch: Batch,
        beam_size: int | None = None,
        length_penalty: float | Array | None = None,
    ) -> tuple[Array, Array]:
        """Beam search (default: the model's ``beam_size`` and ``length_penalty``): tokens
        int32 ``[B, U]`` and their log-probability ``[B]``."""
        beam_size = beam_size or self.beam_size
        if length_penalty is None:
            length_penalty = self.length_penalty
        return _jit_beam(self, self._inputs(batch), beam_size, jnp.asarray(length_penalty))


@functools.partial(nnx.jit, static_argnames="beam_size")
def _jit_beam(
    model: SpeechTransformer, audio: tuple[Array, Array], beam_size: int, length_penalty: Array
) -> tuple[Array, Array]:
    memory_bsd, memory_mask = tile_beams(model._encode(audio, True), beam_size)
    copy, step, key_valid_bu = decoding_step(model, memory_bsd, memory_mask)
    bos = jnp.full((memory_bsd.shape[0],), model.bos_id, jnp.int32)
    return beam_search(
        copy,
        step,
        key_valid_bu,
        bos,
        jnp.arange(model.target_length),
        beam_size=beam_size,
        length_penalty=length_penalty,
    )
