"""Model config: the keys a config's ``model`` section may hold, their defaults and checks."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol

import jax.numpy as jnp
import numpy as np

from attn import catalog
from attn.models.recurrent import CELLS, RNN_ATTENTIONS

__all__ = [
    "TASK_KINDS",
    "ModelConfig",
    "TaskInfo",
    "TaskSpec",
    "check_task",
    "parse_config",
]

TASK_KINDS = ("classify", "tag", "seq2seq", "lm")
POSITIONALS = ("sinusoidal", "learned", "rope", "alibi", "none")
POOLS = ("mean", "cls", "none")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class TaskSpec(Protocol):
    """What a model needs to know about its task (``attn.data`` tasks have these attributes).

    Token id 0 is padding in inputs and targets.
    """

    kind: str  # "classify" | "tag" | "seq2seq" | "lm"
    input_vocab_size: int
    target_vocab_size: int  # classes for "classify"
    input_length: int
    target_length: int


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Every model config key with its default; ``None`` means "derived" as noted."""

    name: str
    # Transformer models.
    num_layers: int = 2
    features: int = 64
    num_heads: int = 4
    num_kv_heads: int | None = None  # None: num_heads
    mlp_features: int | None = None  # None: 4 * features
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    pre_norm: bool = True
    norm: str = "layer_norm"  # "layer_norm" | "rms_norm"
    activation: str = "gelu"  # "gelu" | "relu" | "silu" | "tanh"
    score: str = "scaled_dot"  # attn.catalog "score" spec
    weighting: str = "softmax"  # attn.catalog "weighting" spec (the RNN attention uses it too)
    mask: str | None = None  # extra attn.catalog "mask" spec for every self-attention
    positional: str = "sinusoidal"  # "sinusoidal" | "learned" | "rope" | "alibi" | "none"
    qk_norm: bool = False
    implementation: str = "auto"  # passed to attn.attend
    # attn.catalog "attention" spec replacing attn.attend in every attention layer, e.g.
    # "linear", "performer(num_features=128)" or "linformer(projected_length=64, max_length=512)";
    # None: attend's score/weighting composition.
    attention_fn: str | None = None
    pool: str | None = None  # encoder_classifier: "mean" | "cls" | "none"; None: by task kind
    # rnn_seq2seq.
    cell: str = "gru"  # "gru" | "lstm"
    attention: str = "additive"  # "additive" (Bahdanau) | "general" | "dot" (Luong scores)
    embed_features: int | None = None  # None: features
    hidden_features: int | None = None  # None: features; even (two encoder directions)
    # All models.
    dtype: str = "float32"  # compute dtype; parameters stay float32

    @property
    def compute_dtype(self) -> Any:
        return DTYPES[self.dtype]


def _check_choice(name: str, value: Any, choices: tuple[str, ...] | Mapping[str, Any]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {', '.join(choices)}")


def parse_config(model_config: Mapping[str, Any] | Any) -> ModelConfig:
    """A :class:`ModelConfig` from a dict or ``ml_collections.ConfigDict``; raises
    ``ValueError`` on unknown keys or values (names of models are checked by the registry)."""
    if hasattr(model_config, "to_dict"):
        model_config = model_config.to_dict()
    if not isinstance(model_config, Mapping):
        raise TypeError(f"model config must be a dict or ConfigDict, got {type(model_config)}")
    valid = [field.name for field in dataclasses.fields(ModelConfig)]
    unknown = sorted(set(model_config) - set(valid))
    if unknown:
        raise ValueError(f"unknown model config keys {unknown}; valid keys: {', '.join(valid)}")
    if "name" not in model_config:
        raise ValueError("model config needs a 'name'")
    config = ModelConfig(**model_config)
    _check_choice("model.positional", config.positional, POSITIONALS)
    if config.pool is not None:
        _check_choice("model.pool", config.pool, POOLS)
    _check_choice("model.cell", config.cell, CELLS)
    _check_choice("model.attention", config.attention, RNN_ATTENTIONS)
    _check_choice("model.dtype", config.dtype, DTYPES)
    # Resolve catalog specs now so that a typo fails before any parameter is made.
    catalog.get("score", config.score)
    catalog.get("weighting", config.weighting)
    if config.mask is not None:
        catalog.get("mask", config.mask)
    return config


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """The checked :class:`TaskSpec` fields as plain Python values (models keep some)."""

    kind: str
    input_vocab_size: int
    target_vocab_size: int
    input_length: int
    target_length: int  # 0 where the task kind does not use it


def _positive_int(task: TaskSpec, field: str) -> int:
    value = getattr(task, field)
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise ValueError(f"task.{field} must be a positive int, got {value!r}")
    return int(value)


def check_task(task: TaskSpec, model_name: str, kinds: tuple[str, ...]) -> TaskInfo:
    """``task`` as a :class:`TaskInfo`, or ``ValueError`` unless it has the :class:`TaskSpec`
    fields and a kind in ``kinds``."""
    missing = [field for field in TaskSpec.__annotations__ if not hasattr(task, field)]
    if missing:
        raise ValueError(f"task {task!r} lacks {missing}; a task needs kind, vocab sizes, lengths")
    _check_choice("task.kind", task.kind, TASK_KINDS)
    if task.kind not in kinds:
        raise ValueError(
            f"model {model_name!r} does not handle task kind {task.kind!r}; it handles "
            f"{', '.join(kinds)}"
        )
    return TaskInfo(
        kind=task.kind,
        input_vocab_size=_positive_int(task, "input_vocab_size"),
        target_vocab_size=_positive_int(task, "target_vocab_size"),
        input_length=_positive_int(task, "input_length"),
        # Only seq2seq reads it: the other kinds' targets follow the inputs or are [B].
        target_length=_positive_int(task, "target_length") if task.kind == "seq2seq" else 0,
    )
