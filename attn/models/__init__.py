"""Task models built from :mod:`attn.nn`, chosen by ``model.name`` in an experiment config.

    config.model = attn.models.default_config("decoder_lm")   # every option with its default
    options = attn.models.parse_options(config.model)          # checked, or ValueError
    model = attn.models.build_model(options, task, rngs=nnx.Rngs(0))
    logits = model(batch, deterministic=False)      # training
    predictions = model.predict(batch)              # evaluation, from the inputs alone
    maps = model.attention_maps(batch)              # "encoder/layer0/self" -> [B, N, T, S]

Each model class owns the dataclass of its options (``Model.Options``); the config's
``model`` section is that dataclass's fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_collections
from flax import nnx

from attn.models import options as options_lib
from attn.models.base import TaskModel
from attn.models.captioners import ShowAttendTell, TransformerCaptioner
from attn.models.decoder_lm import DecoderLM
from attn.models.encoder_classifier import EncoderClassifier
from attn.models.encoder_decoder import EncoderDecoder
from attn.models.keyword_transformer import KeywordTransformer
from attn.models.las import LAS
from attn.models.rnn_seq2seq import RNNSeq2Seq
from attn.models.speech_transformer import SpeechTransformer
from attn.models.stacks import AttentionOptions, TransformerOptions
from attn.models.task import INPUT_KINDS, TASK_KINDS, TaskInfo, TaskSpec, check_task
from attn.models.vit import ViT

__all__ = [
    "INPUT_KINDS",
    "LAS",
    "MODELS",
    "TASK_KINDS",
    "AttentionOptions",
    "DecoderLM",
    "EncoderClassifier",
    "EncoderDecoder",
    "KeywordTransformer",
    "RNNSeq2Seq",
    "ShowAttendTell",
    "SpeechTransformer",
    "TaskInfo",
    "TaskModel",
    "TaskSpec",
    "TransformerCaptioner",
    "TransformerOptions",
    "ViT",
    "build_model",
    "default_config",
    "parse_options",
]

MODELS: dict[str, type[TaskModel]] = {
    "encoder_classifier": EncoderClassifier,
    "decoder_lm": DecoderLM,
    "encoder_decoder": EncoderDecoder,
    "rnn_seq2seq": RNNSeq2Seq,
    "vit": ViT,
    "transformer_captioner": TransformerCaptioner,
    "show_attend_tell": ShowAttendTell,
    "las": LAS,
    "speech_transformer": SpeechTransformer,
    "keyword_transformer": KeywordTransformer,
}


def _model_class(name: Any) -> type[TaskModel]:
    if name not in MODELS:
        raise ValueError(f"model.name: unknown model {name!r}; valid models: {', '.join(MODELS)}")
    return MODELS[name]


def default_config(name: str, **overrides: Any) -> ml_collections.ConfigDict:
    """The ``model`` config section of model ``name``: every option with its default, and
    ``overrides`` (checked)."""
    options = options_lib.parse_options(
        _model_class(name).Options, {"name": name, **overrides}, "model"
    )
    return options_lib.as_config_dict(options)


def parse_options(model_config: Mapping[str, Any] | Any) -> Any:
    """The options dataclass of the model named by ``model_config["name"]``, filled from
    ``model_config`` (a dict or ConfigDict); unknown keys and bad values raise ``ValueError``
    naming the key (``model.attention.score``) and the valid choices."""
    if isinstance(model_config, ml_collections.ConfigDict):
        model_config = model_config.to_dict()
    if not isinstance(model_config, Mapping):
        raise TypeError(f"model config must be a dict or ConfigDict, got {type(model_config)}")
    model_class = _model_class(model_config.get("name"))
    return options_lib.parse_options(model_class.Options, model_config, "model")


def build_model(options: Any, task: TaskSpec, *, rngs: nnx.Rngs) -> TaskModel:
    """The model ``options.name`` for ``task``, with fresh parameters.

    ``options`` is a model's options dataclass (see :func:`parse_options`), or a dict or
    ConfigDict parsed into one. ``task`` has ``kind``, ``input_vocab_size``,
    ``target_vocab_size``, ``input_length`` and ``target_length``. A task kind the model does
    not handle raises ``ValueError``.
    """
    if isinstance(options, Mapping | ml_collections.ConfigDict):
        options = parse_options(options)
    model_class = _model_class(options.name)
    info = check_task(task, options.name, model_class.kinds, model_class.input_kinds)
    return model_class(options, info, rngs=rngs)
