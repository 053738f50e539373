"""Task models built from :mod:`attn.nn`, chosen by ``model.name`` in an experiment config.

    model = attn.models.build_model(config.model, task, rngs=nnx.Rngs(0))
    logits = model(batch, deterministic=False)      # training
    predictions = model.predict(batch)              # evaluation, from the inputs alone
    maps = model.attention_maps(batch)              # "encoder/layer0/self" -> [B, N, T, S]

See :class:`ModelConfig` for every config key and its default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flax import nnx

from attn.models.base import TaskModel
from attn.models.config import ModelConfig, TaskSpec, check_task, parse_config
from attn.models.decoder_lm import DecoderLM
from attn.models.encoder_classifier import EncoderClassifier
from attn.models.encoder_decoder import EncoderDecoder
from attn.models.rnn_seq2seq import RNNSeq2Seq

__all__ = [
    "MODELS",
    "DecoderLM",
    "EncoderClassifier",
    "EncoderDecoder",
    "ModelConfig",
    "RNNSeq2Seq",
    "TaskModel",
    "TaskSpec",
    "build_model",
]

MODELS: dict[str, type[TaskModel]] = {
    "encoder_classifier": EncoderClassifier,
    "decoder_lm": DecoderLM,
    "encoder_decoder": EncoderDecoder,
    "rnn_seq2seq": RNNSeq2Seq,
}


def build_model(
    model_config: Mapping[str, Any] | Any, task: TaskSpec, *, rngs: nnx.Rngs
) -> TaskModel:
    """The model named by ``model_config["name"]`` for ``task``, with fresh parameters.

    ``model_config`` is a dict or ``ml_collections.ConfigDict`` (keys: :class:`ModelConfig`);
    ``task`` has ``kind``, ``input_vocab_size``, ``target_vocab_size``, ``input_length`` and
    ``target_length``. Unknown names, keys or values, and a task kind the model does not
    handle, raise ``ValueError``.
    """
    config = parse_config(model_config)
    if config.name not in MODELS:
        raise ValueError(f"unknown model {config.name!r}; valid models: {', '.join(MODELS)}")
    model_class = MODELS[config.name]
    return model_class(config, check_task(task, config.name, model_class.kinds), rngs=rngs)
