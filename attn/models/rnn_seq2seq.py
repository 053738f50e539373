"""GRU/LSTM encoder-decoder with Bahdanau (additive) or Luong (general, dot) attention."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from attn.models.base import Batch, TaskModel, batch_array
from attn.models.decoding import decode_loop, shift_right
from attn.models.embedding import Embedder
from attn.models.options import option
from attn.models.recurrent import CELLS, RNN_SCORES, AttentionStep, BidirectionalEncoder, Carry
from attn.models.stacks import DTYPES
from attn.models.task import TaskInfo
from attn.nn.dropout import Dropout, maybe_active

__all__ = ["RNNAttentionOptions", "RNNSeq2Seq", "RNNSeq2SeqOptions", "decoding_step"]

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class RNNAttentionOptions:
    """``model.attention`` of the RNN model: ``score`` "additive" (Bahdanau), "general" or
    "dot" (Luong), and the ``weighting`` of the scores."""

    score: str = option("additive", choices=tuple(RNN_SCORES))
    weighting: str = option("softmax", catalog_kind="weighting")


@dataclasses.dataclass(frozen=True)
class RNNSeq2SeqOptions:
    """``model`` of the RNN encoder-decoder. ``hidden_features`` is the decoder's state size
    and must be even (the encoder's two directions have half each)."""

    name: str
    cell: str = option("gru", choices=tuple(CELLS))
    embed_features: int = option(64, minimum=1)
    hidden_features: int = option(128, minimum=2)
    dropout_rate: float = option(0.0, minimum=0.0, below=1.0)  # embeddings and readout
    dtype: str = option("float32", choices=tuple(DTYPES))
    attention: RNNAttentionOptions = option(RNNAttentionOptions())


class RNNSeq2Seq(TaskModel):
    """Bahdanau et al. (2015) layout with a choice of cell and attention score.

    * Encoder: a bidirectional ``cell`` with ``hidden_features / 2`` units per direction that
      skips padding (id 0, anywhere), giving states ``[B, T, hidden_features]``.
    * Decoder start: ``tanh(Linear(backward summary))``.
    * Step ``t``: the previous hidden state attends over the encoder states
      (``attention.score``: "additive" = Bahdanau, "general"/"dot" = Luong's scores), the
      context and the embedding of token ``t - 1`` (BOS id ``target_vocab_size`` at ``t = 0``)
      go into the cell, and
      ``Linear([h_t; context_t])`` gives the logits. Feeding the context to the cell already is
      input feeding, so there is no separate option.

    Options: :class:`RNNSeq2SeqOptions`.
    """

    kinds = ("seq2seq",)
    Options = RNNSeq2SeqOptions

    def __init__(self, config: RNNSeq2SeqOptions, task: TaskInfo, *, rngs: nnx.Rngs):
        embed_features, features = config.embed_features, config.hidden_features
        dtype = DTYPES[config.dtype]
        self.bos_id = task.target_vocab_size
        self.target_length = task.target_length
        embed = dict(positional="none", dropout_rate=config.dropout_rate, dtype=dtype, rngs=rngs)
        self.embed_inputs = self._input_embedder(config, task, embed)
        self.embed_targets = Embedder(
            task.target_vocab_size + 1, embed_features, max_length=task.target_length, **embed
        )
        self._build_encoder(config, task, rngs)
        self.step = self._build_step(config, rngs)
        self.readout_dropout = Dropout(
            config.dropout_rate, rngs=rngs if maybe_active(config.dropout_rate) else None
        )
        self.head = nnx.Linear(2 * features, task.target_vocab_size, dtype=dtype, rngs=rngs)

    def _input_embedder(self, config: Any, task: TaskInfo, embed: dict[str, Any]) -> Any:
        """Token embeddings of the inputs (a subclass may read other inputs)."""
        return Embedder(
            task.input_vocab_size, config.embed_features, max_length=task.input_length, **embed
        )

    def _build_encoder(self, config: Any, task: TaskInfo, rngs: nnx.Rngs) -> None:
        """The bidirectional encoder and the bridge to the decoder's first state."""
        features, dtype = config.hidden_features, DTYPES[config.dtype]
        self.encoder = BidirectionalEncoder(
            config.cell, config.embed_features, features, dtype=dtype, rngs=rngs
        )
        self.bridge = nnx.Linear(features // 2, features, dtype=dtype, rngs=rngs)

    def _build_step(self, config: Any, rngs: nnx.Rngs) -> AttentionStep:
        """The decoder step (a subclass may attend otherwise)."""
        return AttentionStep(
            config.cell,
            config.attention.score,
            config.embed_features,
            config.hidden_features,
            weighting=config.attention.weighting,
            dtype=DTYPES[config.dtype],
            rngs=rngs,
        )

    def _inputs(self, batch: Batch) -> Array:
        return batch_array(batch, "inputs", 2)

    def _encode(self, inputs_bt: Array, deterministic: bool) -> tuple[Array, Array, Carry]:
        """Encoder states ``[B, T, H]``, which are real ``[B, T]``, the decoder's first carry."""
        valid_bt = inputs_bt != 0
        x_bte = self.embed_inputs(inputs_bt, deterministic=deterministic)
        memory_bth, summary_bh = self.encoder(x_bte, valid_bt)
        carry = self.step.initial_carry(jnp.tanh(self.bridge(summary_bh)))
        return memory_bth, valid_bt, carry

    def _logits(self, readout: Array, deterministic: bool) -> Array:
        readout = self.readout_dropout(readout, deterministic=deterministic)
        return self.head(readout).astype(jnp.float32)

    def __call__(self, batch: Batch, *, deterministic: bool) -> Array:
        inputs_bt = self._inputs(batch)
        targets_bu = batch_array(batch, "targets", 2)
        memory_bth, valid_bt, carry = self._encode(inputs_bt, deterministic)
        y_bue = self.embed_targets(
            shift_right(targets_bu, self.bos_id), deterministic=deterministic
        )
        readout_buf = self.step.run(carry, y_bue, memory_bth, valid_bt)
        return self._logits(readout_buf, deterministic)

    def predict(self, batch: Batch) -> Array:
        """Greedy decoding of ``target_length`` tokens from the inputs alone."""
        return self.greedy_decode(batch)[0]

    def greedy_decode(self, batch: Batch) -> tuple[Array, Array]:
        """Greedy tokens int32 ``[B, U]`` and the logits ``[B, U, V]`` each step chose from."""
        tokens_bu, (logits_buv, _) = _jit_greedy(self, self._inputs(batch))
        return tokens_bu, logits_buv

    def attention_maps(self, batch: Batch) -> dict[str, Array]:
        """``{"rnn/alignment": [B, 1, U, T]}``: the attention weights of each greedy step."""
        _, (_, weights_but) = _jit_greedy(self, self._inputs(batch))
        return {"rnn/alignment": weights_but[:, None]}


def decoding_step(memory_bth: Array, valid_bt: Array) -> Callable[..., Any]:
    """The :func:`attn.models.decoding.decode_loop` step of an :class:`RNNSeq2Seq` attending
    over ``memory [B, T, H]`` (real where ``valid [B, T]``); its outputs are the step's logits
    ``[B, V]`` and alignment ``[B, T]``."""

    def step(model, carry, tokens_b, position):
        del position  # an RNN knows where it is
        y_be = model.embed_targets(tokens_b[:, None], deterministic=True)[:, 0]
        carry, readout_bf, weights_bt = model.step(carry, y_be, memory_bth, valid_bt)
        logits_bv = model._logits(readout_bf, True)
        return logits_bv, carry, (logits_bv, weights_bt)

    return step


@nnx.jit
def _jit_greedy(model: RNNSeq2Seq, inputs: Any) -> tuple[Array, tuple[Array, Array]]:
    """Greedy tokens ``[B, U]``, and each step's logits ``[B, U, V]`` and alignment
    ``[B, U, T]``."""
    memory_bth, valid_bt, carry = model._encode(inputs, True)
    B, U = memory_bth.shape[0], model.target_length
    bos_b = jnp.full((B,), model.bos_id, jnp.int32)
    return decode_loop(model, decoding_step(memory_bth, valid_bt), carry, bos_b, jnp.arange(U))
