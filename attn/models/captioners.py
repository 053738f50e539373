"""Image captioners: the encoder-decoder Transformer and the RNN encoder-decoder with an image
front-end instead of token embeddings.

* :class:`TransformerCaptioner`: ViT patches through an :mod:`attn.nn` encoder, and a causal
  decoder that cross-attends to them.
* :class:`ShowAttendTell`: Xu et al. (2015): a CNN grid of annotation vectors and an LSTM (or
  GRU) decoder that attends over them with additive (Bahdanau) attention at every word.

Both decode greedily for evaluation (never teacher-forced) and give ``word_alignment``: for
each greedy word, each attention head's weights over the image's regions (``grid_shape``,
``cell_size``, row-major).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from attn.models.base import Batch, cross_attention_heads, image_array
from attn.models.encoder_decoder import EncoderDecoder
from attn.models.image_encoders import ConvGrid, PatchEmbedder
from attn.models.options import option
from attn.models.rnn_seq2seq import RNNSeq2Seq, RNNSeq2SeqOptions
from attn.models.stacks import DTYPES, TransformerOptions
from attn.models.task import TaskInfo

__all__ = [
    "ShowAttendTell",
    "ShowAttendTellOptions",
    "TransformerCaptioner",
    "TransformerCaptionerOptions",
]

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class TransformerCaptionerOptions(TransformerOptions):
    """The Transformer options and the encoder's ``patch_size`` (must divide the image's
    sides); ``attention.positional`` ``"sinusoidal"`` is 2-D over the patches and 1-D over
    the words."""

    patch_size: int = option(4, minimum=1)


class TransformerCaptioner(EncoderDecoder):
    """``images [B, H, W, C]`` and caption ``targets [B, U]`` -> logits ``[B, U, V]``
    (teacher-forced); ``predict`` decodes greedily with a KV cache.

    ``attention_maps`` holds ``"decoder/layer{i}/cross"`` ``[B, N, U, P]``: each greedy word's
    attention over the ``P`` patches.
    """

    input_kinds = ("image",)
    Options = TransformerCaptionerOptions

    def _input_embedder(
        self, config: TransformerCaptionerOptions, task: TaskInfo, embed: dict[str, Any]
    ) -> nnx.Module:
        assert task.image_shape is not None  # check_task guarantees it for input_kinds
        self.image_shape = task.image_shape
        patches = PatchEmbedder(task.image_shape, config.patch_size, config.features, **embed)
        self.grid_shape, self.cell_size = patches.grid_shape, patches.cell_size
        return patches

    def _inputs(self, batch: Batch) -> Array:
        return image_array(batch, self.image_shape)

    def _encode(self, images_bhwc: Array, deterministic: bool) -> tuple[Array, None]:
        """Patch states ``[B, P, D]``; every patch is a key (no cross-attention mask)."""
        x_bpd = self.embed_inputs(images_bhwc, deterministic=deterministic)
        return self.encoder(x_bpd, deterministic=deterministic), None

    def word_alignment(self, batch: Batch) -> Array:
        """Each greedy word's attention over the patches, per cross-attention head
        ``[B, L * N, U, P]`` (layer-major; each row sums to 1)."""
        return cross_attention_heads(self.attention_maps(batch))


@dataclasses.dataclass(frozen=True)
class ShowAttendTellOptions(RNNSeq2SeqOptions):
    """The RNN encoder-decoder's options (``cell`` "lstm" is the paper's) and the CNN's:
    ``conv_channels`` in its first block (doubled per block) and ``num_downsamples`` stride-2
    blocks (the grid is the image shrunk by ``2**num_downsamples``)."""

    cell: str = option("lstm", choices=("gru", "lstm"))
    conv_channels: int = option(32, minimum=1)
    num_downsamples: int = option(2, minimum=0)


class ShowAttendTell(RNNSeq2Seq):
    """Show, Attend and Tell (soft attention): the decoder starts from
    ``tanh(Linear(mean annotation))`` and at each word attends over the CNN grid with
    ``attention.score`` (additive by default), feeding the context to the cell.

    ``attention_maps`` holds ``"rnn/alignment"`` ``[B, 1, U, P]`` of the greedy words.
    """

    input_kinds = ("image",)
    Options = ShowAttendTellOptions

    def _input_embedder(
        self, config: ShowAttendTellOptions, task: TaskInfo, embed: dict[str, Any]
    ) -> Any:
        return nnx.data(None)  # images go through the CNN of _build_encoder

    def _build_encoder(self, config: ShowAttendTellOptions, task: TaskInfo, rngs: nnx.Rngs) -> None:
        assert task.image_shape is not None  # check_task guarantees it for input_kinds
        self.image_shape = task.image_shape
        features, dtype = config.hidden_features, DTYPES[config.dtype]
        self.encoder = ConvGrid(
            task.image_shape,
            features,
            channels=config.conv_channels,
            num_downsamples=config.num_downsamples,
            dtype=dtype,
            rngs=rngs,
        )
        self.grid_shape, self.cell_size = self.encoder.grid_shape, self.encoder.cell_size
        self.bridge = nnx.Linear(features, features, dtype=dtype, rngs=rngs)

    def _inputs(self, batch: Batch) -> Array:
        return image_array(batch, self.image_shape)

    def _encode(self, images_bhwc: Array, deterministic: bool) -> tuple[Array, Array, Any]:
        """Annotation vectors ``[B, P, H]``, all real, and the decoder's first carry."""
        del deterministic  # the CNN has no dropout
        memory_bph = self.encoder(images_bhwc)
        valid_bp = jnp.ones(memory_bph.shape[:2], bool)
        carry = self.step.initial_carry(jnp.tanh(self.bridge(memory_bph.mean(axis=1))))
        return memory_bph, valid_bp, carry

    def word_alignment(self, batch: Batch) -> Array:
        """Each greedy word's attention over the grid ``[B, 1, U, P]`` (one head)."""
        return self.attention_maps(batch)["rnn/alignment"]
