"""Experiment configs: the sections and their defaults, loading ``file.py[:arg]``,
``--config.KEY=VALUE`` overrides, and the checks of a whole config before anything runs.

A config has four sections: ``data`` (the dataset's keys, :mod:`attn.data.datasets`),
``model`` (the model's options dataclass, :mod:`attn.models`), ``optim``
(:class:`OptimOptions`) and ``train`` (:class:`TrainOptions`). :func:`validate` checks every
key and value of all four, builds the optimizer and traces the model on a stand-in batch
(shapes only: nothing is compiled or generated), so a bad config fails in a second or two with
a message naming the key.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from attn import data, models
from attn.models.options import as_config_dict, option, parse_options
from attn.models.task import input_kind_of
from attn.train.metrics import ERROR_RATES, METRICS
from attn.train.optim import build_optimizer
from attn.train.sharding import MeshOptions, mesh_shape

__all__ = [
    "SECTIONS",
    "Checked",
    "OptimOptions",
    "TrainOptions",
    "apply_override",
    "base_config",
    "from_json",
    "load_config",
    "save_json",
    "set_value",
    "shorten_for_smoke",
    "validate",
]

SECTIONS = ("data", "model", "optim", "train")


@dataclasses.dataclass(frozen=True)
class OptimOptions:
    """``optim``: any optax optimizer by name with ``kwargs``, a learning rate (an array in the
    optimizer state, so sweeps can vmap it), an optax schedule used as its multiplier (peak
    1.0; its run length, e.g. ``decay_steps``, follows ``train.num_steps`` unless given) and
    gradient clipping by global norm (``None`` or 0: off)."""

    name: str = "adamw"
    learning_rate: float = option(1e-3, above=0.0)
    kwargs: dict = option({"weight_decay": 1e-4})
    schedule: str = "constant_schedule"
    schedule_kwargs: dict = option({})
    grad_clip_norm: float | None = option(1.0, minimum=0.0)


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """``train``: the loop's run length, logging, checkpoints and evaluation."""

    num_steps: int = option(1000, minimum=1)
    log_every: int = option(50, minimum=0)  # 0: only at the end
    eval_every: int = option(250, minimum=0)
    checkpoint_every: int = option(250, minimum=0)
    max_to_keep: int = option(3, minimum=1)
    seed: int = option(0, minimum=0)
    accumulation_steps: int = option(1, minimum=1)
    eval_batches: int | None = option(None, minimum=1)  # None: the whole eval split
    best_metric: str = option("sequence_accuracy", choices=METRICS)
    best_mode: str = option("max", choices=("max", "min"))
    plot_examples: int = option(1, minimum=0)
    sample_tokens: int = option(0, minimum=0)  # language models: tokens sampled at each eval
    sample_prompt: str = ""
    mesh: MeshOptions = option(MeshOptions())  # devices per mesh axis, "data" and "fsdp"


def base_config(model: str | None = None) -> ml_collections.ConfigDict:
    """Defaults every experiment starts from; an experiment file sets what differs.

    ``model`` names the model whose options fill the ``model`` section (every key with its
    default, see :func:`attn.models.default_config`); without it the section is empty.
    """
    config = ml_collections.ConfigDict()
    config.data = ml_collections.ConfigDict(
        {"name": "", "batch_size": 32, "data_dir": None, "seed": 0}
    )
    config.model = (
        models.default_config(model) if model else ml_collections.ConfigDict({"name": ""})
    )
    config.optim = as_config_dict(OptimOptions())
    config.train = as_config_dict(TrainOptions())
    return config


def shorten_for_smoke(config: ml_collections.ConfigDict, num_steps: int = 4) -> None:
    """A ``:smoke`` variant's loop: ``num_steps`` steps, one evaluation at the end, a checkpoint
    half way, and a warm-up of at most a quarter of the steps (the schedule's length follows
    ``num_steps`` by itself)."""
    if "warmup_steps" in config.optim.schedule_kwargs:
        # A quarter of the run at most, so that overriding num_steps down to 2 still works.
        config.optim.schedule_kwargs.warmup_steps = min(
            config.optim.schedule_kwargs.warmup_steps, max(1, num_steps // 4)
        )
    config.train.update(
        num_steps=num_steps,
        eval_every=num_steps,
        checkpoint_every=max(1, num_steps // 2),
        log_every=2,
    )


def load_config(spec: str) -> ml_collections.ConfigDict:
    """``path/to/file.py[:arg]`` -> ``get_config(arg)`` of that file, locked against new keys.

    An ``arg`` must be one of the file's ``ARGS`` (a tuple of names, e.g. ``("smoke",)``).
    """
    path_text, _, arg = spec.partition(":")
    path = Path(path_text)
    if not path.is_file():
        raise ValueError(f"config file {path_text!r} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"attn_experiment_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{path_text} has no get_config(arg=None) function")
    known = tuple(getattr(module, "ARGS", ()))
    if arg and arg not in known:
        raise ValueError(
            f"{path_text} has no variant {arg!r}; its ARGS are "
            f"{', '.join(map(repr, known)) or 'none'} (use {path_text} or {path_text}:ARG)"
        )
    config = module.get_config(arg or None)
    if not isinstance(config, ml_collections.ConfigDict):
        raise ValueError(
            f"{path_text}: get_config must return an ml_collections.ConfigDict (start from "
            f"attn.train.config.base_config()), got {type(config).__name__}"
        )
    config.lock()
    return config


def _parse_value(text: str) -> Any:
    if text in ("true", "false"):  # the shell's and JSON's spelling of booleans
        return text == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # bare words are strings: --config.model.name=decoder_lm


# Sections that hold keyword arguments of an optax function rather than our own keys: an
# override may add a key to them (--config.optim.schedule_kwargs.decay_steps=500).
FREE_FORM_SECTIONS = ("optim.kwargs", "optim.schedule_kwargs")


def apply_override(config: ml_collections.ConfigDict, dotted_key: str, text: str) -> None:
    """Set ``config.<dotted_key>`` from command-line text (a Python literal, or a bare word as a
    string); unknown keys suggest the closest."""
    try:
        set_value(config, dotted_key, _parse_value(text))
    except ValueError as error:
        raise ValueError(f"--config.{dotted_key}={text}: {error}") from None


def set_value(config: ml_collections.ConfigDict, dotted_key: str, value: Any) -> None:
    """Set ``config.<dotted_key>`` to ``value``; unknown keys suggest the closest, and a value
    of another type than the key's raises ``ValueError``."""
    *parents, leaf = dotted_key.split(".")
    node = config
    walked = []
    for name in [*parents, leaf]:
        adding = name == leaf and ".".join(parents) in FREE_FORM_SECTIONS
        if not isinstance(node, ml_collections.ConfigDict) or (name not in node and not adding):
            siblings = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            close = difflib.get_close_matches(name, siblings, n=1)
            hint = f"; did you mean {'.'.join([*walked, close[0]])!r}?" if close else ""
            where = ".".join(walked) or "config"
            raise ValueError(
                f"unknown config key {dotted_key!r}: {where} has no {name!r}{hint} "
                f"(valid: {', '.join(sorted(siblings))})"
            )
        walked.append(name)
        if name != leaf:
            node = node[name]
    try:
        with node.unlocked():
            setattr(node, leaf, value)
    except TypeError as error:
        raise ValueError(f"{dotted_key}: {error}") from None


@dataclasses.dataclass(frozen=True)
class Checked:
    """A validated config's parts, so a run builds each from one parse: the dataset's spec,
    the model's options, the optimizer (with ``learning_rate(step)`` for logs) and the
    ``optim``/``train`` options."""

    dataset: data.DatasetSpec
    model: Any
    optim: OptimOptions
    train: TrainOptions
    optimizer: optax.GradientTransformation
    learning_rate: Any


def _stand_in_batch(kind: str, length: int, info: models.TaskInfo) -> dict[str, Any]:
    """Shapes of a two-example batch of task ``kind`` with ``info``'s inputs (see
    :class:`attn.data.Task`)."""
    target_shape = (2,) if kind == "classify" else (2, length)
    batch = {
        "targets": jax.ShapeDtypeStruct(target_shape, jnp.int32),
        "weights": jax.ShapeDtypeStruct(target_shape, jnp.float32),
    }
    if info.image_shape is not None:
        batch["inputs"] = jax.ShapeDtypeStruct((2, *info.image_shape), jnp.float32)
    elif info.audio_shape is not None:
        batch["inputs"] = jax.ShapeDtypeStruct((2, *info.audio_shape), jnp.float32)
        batch["input_lengths"] = jax.ShapeDtypeStruct((2,), jnp.int32)
    else:
        batch["inputs"] = jax.ShapeDtypeStruct((2, length), jnp.int32)
    return batch


def _trace_model(
    options: Any,
    kind: str,
    image_shape: tuple[int, int, int] | None,
    audio_shape: tuple[int, int] | None,
) -> None:
    """Build the model and run a training forward pass and a prediction on a stand-in task of
    ``kind`` (with the dataset's image or audio shape, if any) as shapes only
    (``jax.eval_shape``): every check of the modules and of the attention implementations
    runs, nothing is compiled."""
    length = 8
    task = models.TaskInfo(
        kind, length, length, length, length, image_shape, audio_shape=audio_shape
    )

    def forward(batch: dict[str, jax.Array]) -> Any:
        model = models.build_model(options, task, rngs=nnx.Rngs(0))
        return model(batch, deterministic=False), model.predict(batch)

    try:
        jax.eval_shape(forward, _stand_in_batch(kind, length, task))
    except (ValueError, TypeError) as error:
        raise ValueError(f"model ({options.name}): {error}") from None


def _trace_optimizer(optimizer: optax.GradientTransformation) -> None:
    """Initialise the optimizer and take one update on a stand-in parameter, as shapes only:
    values optax checks only when it runs (``optim.kwargs={"b1": "x"}``) fail here."""
    params = {"w": jax.ShapeDtypeStruct((2,), jnp.float32)}

    def init_and_update(params: Any) -> Any:
        return optimizer.update(params, optimizer.init(params), params)

    try:
        jax.eval_shape(init_and_update, params)
    except (ValueError, TypeError) as error:
        raise ValueError(f"optim: the optimizer fails on a stand-in parameter: {error}") from None


def validate(config: ml_collections.ConfigDict) -> Checked:
    """Check every section before anything is built, generated or compiled; raise
    ``ValueError`` naming the key (and the valid choices) of the first problem found."""
    if not isinstance(config, ml_collections.ConfigDict):
        raise ValueError(f"a config must be an ml_collections.ConfigDict, got {type(config)}")
    missing = [section for section in SECTIONS if section not in config]
    extra = sorted(set(config.keys()) - set(SECTIONS))
    if missing or extra:
        raise ValueError(
            f"config sections must be {list(SECTIONS)}; missing {missing}, unknown {extra}"
        )
    dataset = data.check_config(config.data)
    model = models.parse_options(config.model)
    optim = parse_options(OptimOptions, config.optim, "optim")
    train = parse_options(TrainOptions, config.train, "train")
    optimizer, learning_rate = build_optimizer(optim, train.num_steps)
    _trace_optimizer(optimizer)
    model_class = models.MODELS[model.name]
    if dataset.kind not in model_class.kinds:
        raise ValueError(
            f"model.name: {model.name!r} does not handle dataset {dataset.name!r} (a "
            f"{dataset.kind!r} task); models for it: "
            f"{', '.join(n for n, m in models.MODELS.items() if dataset.kind in m.kinds)}"
        )
    image_shape = data.image_shape_of(config.data)
    audio_shape = data.audio_shape_of(config.data)
    input_kind = input_kind_of(image_shape, audio_shape)
    if input_kind not in model_class.input_kinds:
        raise ValueError(
            f"model.name: {model.name!r} reads {' or '.join(model_class.input_kinds)} inputs, "
            f"but dataset {dataset.name!r} gives {input_kind}; models for it: "
            + ", ".join(
                n
                for n, m in models.MODELS.items()
                if dataset.kind in m.kinds and input_kind in m.input_kinds
            )
        )
    captions = image_shape is not None and dataset.kind == "seq2seq"
    if train.best_metric == "bleu4" and not captions:
        raise ValueError(
            f"train.best_metric='bleu4' is reported for image captioning only, not for "
            f"dataset {dataset.name!r}"
        )
    transcribes = audio_shape is not None and dataset.kind == "seq2seq"
    if train.best_metric in ERROR_RATES and not transcribes:
        raise ValueError(
            f"train.best_metric={train.best_metric!r} is reported for speech recognition only, "
            f"not for dataset {dataset.name!r}"
        )
    if train.best_metric in ERROR_RATES and train.best_mode != "min":
        raise ValueError(
            f"train.best_metric={train.best_metric!r} is an error rate: set train.best_mode='min'"
        )
    if train.best_metric == "localisation" and dataset.name != "shapes_captions":
        raise ValueError(
            "train.best_metric='localisation' needs object masks, which only dataset "
            f"'shapes_captions' has (not {dataset.name!r})"
        )
    if train.sample_tokens and model_class.sample is models.TaskModel.sample:
        raise ValueError(
            f"train.sample_tokens={train.sample_tokens}: model {model.name!r} does not sample "
            "text (language models do); set it to 0"
        )
    batch_size, devices = config.data.batch_size, jax.device_count()
    if batch_size % train.accumulation_steps:
        raise ValueError(
            f"data.batch_size={batch_size} must be a multiple of "
            f"train.accumulation_steps={train.accumulation_steps}"
        )
    mesh_shape(train.mesh, devices)
    if batch_size % devices:
        raise ValueError(
            f"data.batch_size={batch_size} must be a multiple of the {devices} devices (of all "
            "processes)"
        )
    _trace_model(model, dataset.kind, image_shape, audio_shape)
    return Checked(dataset, model, optim, train, optimizer, learning_rate)


def save_json(config: ml_collections.ConfigDict, path: Path) -> None:
    """Write ``config`` as JSON atomically (a temporary file renamed over ``path``)."""
    text = json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str) + "\n"
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def from_json(path: Path) -> ml_collections.ConfigDict:
    """A config written by :func:`save_json`; a broken file raises ``ValueError`` naming it."""
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read {path}: not a JSON config ({error})") from None
    if not isinstance(values, dict):
        raise ValueError(f"cannot read {path}: not a JSON config (not an object)")
    return ml_collections.ConfigDict(values)
