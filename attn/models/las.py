"""Listen, Attend and Spell (Chan et al. 2016): a pyramidal bidirectional RNN listener over
audio features and an attending RNN speller over characters."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from attn.models.audio_encoders import PyramidalListener
from attn.models.base import Batch, audio_array
from attn.models.decoding import beam_search, tile_beams
from attn.models.options import option
from attn.models.recurrent import CELLS, AttentionStep, Carry, hidden_of, zero_carry
from attn.models.rnn_seq2seq import RNNSeq2Seq, RNNSeq2SeqOptions, decoding_step
from attn.models.stacks import DTYPES
from attn.models.task import TaskInfo
from attn.nn import AdditiveAttention, LocationAwareAttention

__all__ = ["LAS", "LASAttentionOptions", "LASOptions", "SpellerStep"]

Array = jax.Array

# The speller's attention by score name (attn.scores): query, key and hidden size are all the
# model's hidden_features.
SPELLER_ATTENTIONS: dict[str, Callable[..., nnx.Module]] = {
    "additive": lambda features, options, rngs: AdditiveAttention(
        features, features, features, weighting=options.weighting, rngs=rngs
    ),
    "location_aware": lambda features, options, rngs: LocationAwareAttention(
        features,
        features,
        features,
        location_filters=options.location_filters,
        width=options.location_width,
        weighting=options.weighting,
        rngs=rngs,
    ),
}


@dataclasses.dataclass(frozen=True)
class LASAttentionOptions:
    """``model.attention`` of LAS: ``score`` "location_aware" (Chorowski et al. 2015: also
    reads the previous step's alignment through ``location_filters`` filters of
    ``location_width`` frames) or "additive" (Bahdanau), and the ``weighting`` of the scores."""

    score: str = option("location_aware", choices=tuple(SPELLER_ATTENTIONS))
    weighting: str = option("softmax", catalog_kind="weighting")
    location_filters: int = option(32, minimum=1)
    location_width: int = option(31, minimum=1)


@dataclasses.dataclass(frozen=True)
class LASOptions(RNNSeq2SeqOptions):
    """``model`` of LAS: the RNN encoder-decoder's options (``hidden_features`` is the
    listener's output, both directions, and the speller's state), ``pyramid_layers`` (time
    shrinks by ``2 ** pyramid_layers``: 2 gives x4, 3 gives x8), and the decoding of
    ``predict``: ``beam_size`` (1 = greedy) with hypotheses ranked at the end by
    ``log_prob / length ** length_penalty``."""

    cell: str = option("lstm", choices=tuple(CELLS))
    pyramid_layers: int = option(2, minimum=0)
    beam_size: int = option(1, minimum=1)
    length_penalty: float = option(1.0, minimum=0.0)
    attention: LASAttentionOptions = option(LASAttentionOptions())  # type: ignore[assignment]


class SpellerStep(AttentionStep):
    """LAS's speller step, in the :class:`AttentionStep` protocol but LAS's order: the cell
    reads the previous token and the previous context, ``s_i = cell(s_{i-1}, [y_{i-1};
    c_{i-1}])``, then ``s_i`` attends over the listener's states, ``c_i = attend(s_i, memory)``
    (with the previous alignment, for location-aware attention), and the readout is
    ``[s_i; c_i]``. The carry is ``(cell carry, c [B, H], alignment [B, S])``.
    """

    def __init__(
        self,
        cell: str,
        attention: LASAttentionOptions,
        embed_features: int,
        features: int,
        *,
        dtype: Any,
        rngs: nnx.Rngs,
    ):
        self.cell = CELLS[cell](embed_features + features, features, dtype=dtype, rngs=rngs)
        self.attention = SPELLER_ATTENTIONS[attention.score](features, attention, rngs)

    def __call__(
        self, carry: Carry, y_be: Array, memory_bsh: Array, memory_valid_bs: Array
    ) -> tuple[Carry, Array, Array]:
        cell_carry, context_bh, previous_bs = carry
        cell_carry, h_bh = self.cell(cell_carry, jnp.concatenate([y_be, context_bh], axis=-1))
        location = (
            dict(previous_weights=previous_bs)
            if isinstance(self.attention, LocationAwareAttention)
            else {}
        )
        context_bh, weights_bs = self.attention(h_bh, memory_bsh, mask=memory_valid_bs, **location)
        context_bh = context_bh.astype(h_bh.dtype)
        readout = jnp.concatenate([h_bh, context_bh], axis=-1)
        return (cell_carry, context_bh, weights_bs), readout, weights_bs

    def first_carry(self, memory_bsh: Array, memory_valid_bs: Array) -> Carry:
        """Zero state and context; the alignment starts spread evenly over the real steps
        (the location filters then see where the utterance is), 0 where there are none."""
        B, _, H = memory_bsh.shape
        cell_carry = zero_carry(self.cell, B)
        context_bh = jnp.zeros((B, H), hidden_of(cell_carry).dtype)
        valid_bs = memory_valid_bs.astype(jnp.float32)
        uniform_bs = valid_bs / jnp.maximum(valid_bs.sum(axis=-1, keepdims=True), 1.0)
        return cell_carry, context_bh, uniform_bs


class LAS(RNNSeq2Seq):
    """``audio [B, frames, bins]`` with ``input_lengths [B]`` and character ``targets [B, U]``
    -> logits ``[B, U, V]`` (teacher-forced), with :class:`RNNSeq2Seq`'s target embedding,
    BOS (id ``target_vocab_size``), readout and head.

    * Listener: :class:`~attn.models.audio_encoders.PyramidalListener`; encoder step ``s``
      covers input frames ``[s * frame_stride, (s + 1) * frame_stride)``.
    * Speller: :class:`SpellerStep`, one ``cell`` layer.
    * ``predict``: beam search of ``beam_size`` (greedy at 1), never teacher-forced.

    ``attention_maps`` holds ``"speller/alignment"`` ``[B, 1, U, S]``: each greedy step's
    weights over the listener's steps.
    """

    input_kinds = ("audio",)
    Options = LASOptions

    def __init__(self, config: LASOptions, task: TaskInfo, *, rngs: nnx.Rngs):
        super().__init__(config, task, rngs=rngs)
        self.beam_size, self.length_penalty = config.beam_size, config.length_penalty

    def _input_embedder(self, config: LASOptions, task: TaskInfo, embed: dict[str, Any]) -> Any:
        return nnx.data(None)  # features go straight into the listener

    def _build_encoder(self, config: LASOptions, task: TaskInfo, rngs: nnx.Rngs) -> None:
        assert task.audio_shape is not None  # check_task guarantees it for input_kinds
        self.audio_shape = task.audio_shape
        self.encoder = PyramidalListener(
            config.cell,
            task.audio_shape[1],
            config.hidden_features,
            config.pyramid_layers,
            dtype=DTYPES[config.dtype],
            rngs=rngs,
        )
        self.frame_stride = self.encoder.frame_stride

    def _build_step(self, config: LASOptions, rngs: nnx.Rngs) -> SpellerStep:
        return SpellerStep(
            config.cell,
            config.attention,
            config.embed_features,
            config.hidden_features,
            dtype=DTYPES[config.dtype],
            rngs=rngs,
        )

    def _inputs(self, batch: Batch) -> tuple[Array, Array]:  # type: ignore[override]
        return audio_array(batch, self.audio_shape)

    def _encode(  # type: ignore[override]
        self, audio: tuple[Array, Array], deterministic: bool
    ) -> tuple[Array, Array, Carry]:
        """Listener states ``[B, S, H]``, which are real ``[B, S]``, the speller's first carry."""
        del deterministic  # the listener has no dropout
        memory_bsh, valid_bs = self.encoder(*audio)
        return memory_bsh, valid_bs, self.step.first_carry(memory_bsh, valid_bs)

    def predict(self, batch: Batch) -> Array:
        """Characters ``[B, U]`` by beam search (``beam_size``; greedy at 1); after EOS the
        beam pads with 0, greedy goes on choosing."""
        if self.beam_size == 1:
            return self.greedy_decode(batch)[0]
        return self.beam_decode(batch)[0]

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

    def attention_maps(self, batch: Batch) -> dict[str, Array]:
        return {"speller/alignment": super().attention_maps(batch)["rnn/alignment"]}

    def frame_alignment(self, batch: Batch) -> Array:
        """Each greedy character's attention over the listener's steps ``[B, 1, U, S]``."""
        return self.attention_maps(batch)["speller/alignment"]


@functools.partial(nnx.jit, static_argnames="beam_size")
def _jit_beam(
    model: LAS, audio: tuple[Array, Array], beam_size: int, length_penalty: Array
) -> tuple[Array, Array]:
    memory_bsh, valid_bs, carry = tile_beams(model._encode(audio, True), beam_size)
    bos = jnp.full((memory_bsh.shape[0],), model.bos_id, jnp.int32)
    return beam_search(
        model,
        decoding_step(memory_bsh, valid_bs),
        carry,
        bos,
        jnp.arange(model.target_length),
        beam_size=beam_size,
        length_penalty=length_penalty,
    )
