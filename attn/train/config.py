"""Experiment configs: the shared defaults, loading ``file.py[:arg]``, ``--config.KEY=VALUE``
overrides and validation of every named component before anything compiles."""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
from pathlib import Path
from typing import Any

import ml_collections

SECTIONS = ("data", "model", "optim", "train")


def base_config() -> ml_collections.ConfigDict:
    """Defaults every experiment starts from; an experiment file sets what differs."""
    config = ml_collections.ConfigDict()
    config.data = ml_collections.ConfigDict(
        {"name": "", "batch_size": 32, "data_dir": None, "seed": 0}
    )
    config.model = ml_collections.ConfigDict(
        {
            "name": "",
            "num_layers": 2,
            "features": 64,
            "num_heads": 4,
            "num_kv_heads": None,
            "mlp_features": 256,
            "dropout_rate": 0.0,
            "attention_dropout_rate": 0.0,
            "pre_norm": True,
            "score": "scaled_dot",
            "weighting": "softmax",
            "mask": None,
            "attention_fn": None,  # e.g. "linear", "performer(num_features=128)"
            "positional": "sinusoidal",
            "dtype": "float32",
        }
    )
    config.optim = ml_collections.ConfigDict(
        {
            "name": "adamw",
            "learning_rate": 1e-3,
            "kwargs": {"weight_decay": 1e-4},
            "schedule": "constant_schedule",
            "schedule_kwargs": {},
            "grad_clip_norm": 1.0,
        }
    )
    config.train = ml_collections.ConfigDict(
        {
            "num_steps": 1000,
            "log_every": 50,
            "eval_every": 250,
            "checkpoint_every": 250,
            "max_to_keep": 3,
            "seed": 0,
            "accumulation_steps": 1,
            "eval_batches": None,  # None: the whole eval split
            "best_metric": "sequence_accuracy",
            "best_mode": "max",
            "plot_examples": 1,
            "sample_tokens": 0,  # language models: tokens to sample at each evaluation
            "sample_prompt": "",
        }
    )
    return config


def shorten_for_smoke(config: ml_collections.ConfigDict, num_steps: int = 4) -> None:
    """A ``:smoke`` variant's loop: ``num_steps`` steps, one evaluation at the end, a checkpoint
    half way, and the warm-up/decay schedule squeezed into those steps."""
    if "warmup_steps" in config.optim.schedule_kwargs:
        config.optim.schedule_kwargs.update(warmup_steps=2, decay_steps=num_steps)
    config.train.update(
        num_steps=num_steps,
        eval_every=num_steps,
        checkpoint_every=max(1, num_steps // 2),
        log_every=2,
    )


def load_config(spec: str) -> ml_collections.ConfigDict:
    """``path/to/file.py[:arg]`` -> ``get_config(arg)`` of that file, locked against new keys."""
    path_text, _, arg = spec.partition(":")
    path = Path(path_text)
    if not path.is_file():
        raise ValueError(f"config file {path_text!r} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"attn_experiment_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{path_text} has no get_config(arg=None) function")
    config = module.get_config(arg or None)
    config.lock()
    return config


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # bare words are strings: --config.model.name=decoder_lm


def apply_override(config: ml_collections.ConfigDict, dotted_key: str, text: str) -> None:
    """Set ``config.<dotted_key>`` from command-line text; unknown keys suggest the closest."""
    *parents, leaf = dotted_key.split(".")
    node = config
    walked = []
    for name in [*parents, leaf]:
        if not isinstance(node, ml_collections.ConfigDict) or name not in node:
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
    value = _parse_value(text)
    try:
        with node.unlocked():
            setattr(node, leaf, value)
    except TypeError as error:
        raise ValueError(f"--config.{dotted_key}={text}: {error}") from None


def validate(config: ml_collections.ConfigDict) -> None:
    """Fail fast, before building or compiling anything, on missing sections and unknown
    component names (dataset, model, score, weighting, mask, attention, optimizer, schedule,
    dtype)."""
    from attn import catalog, data, models
    from attn.train.optim import build_optimizer

    missing = [section for section in SECTIONS if section not in config]
    if missing:
        raise ValueError(f"config lacks section(s) {missing}; an experiment needs {list(SECTIONS)}")
    dataset = catalog.get("dataset", config.data.name)
    known = set(data.COMMON_DEFAULTS) | set(dataset.defaults) | {"name"}
    unknown = sorted(set(config.data.keys()) - known)
    if unknown:
        raise ValueError(
            f"data: unknown key(s) {unknown} for {dataset.name!r}; valid: {sorted(known)}"
        )
    catalog.get("model", config.model.name)
    models.parse_config(config.model)  # unknown keys and values
    for kind, key in (
        ("score", "score"),
        ("weighting", "weighting"),
        ("mask", "mask"),
        ("attention", "attention_fn"),
    ):
        spec = config.model.get(key)
        if spec:
            catalog.get(kind, spec)
    if config.model.get("dtype", "float32") not in ("float32", "bfloat16"):
        raise ValueError(f"model.dtype must be 'float32' or 'bfloat16', got {config.model.dtype!r}")
    build_optimizer(config.optim)
    if (
        config.train.accumulation_steps < 1
        or config.data.batch_size % config.train.accumulation_steps
    ):
        raise ValueError(
            f"data.batch_size={config.data.batch_size} must be a multiple of "
            f"train.accumulation_steps={config.train.accumulation_steps}"
        )


def save_json(config: ml_collections.ConfigDict, path: Path) -> None:
    path.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str) + "\n")


def from_json(path: Path) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(json.loads(Path(path).read_text()))
