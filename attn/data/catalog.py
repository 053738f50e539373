"""Dataset names -> how to build their :class:`~attn.data.task.Task`; and ``get_task``.

    task = get_task({"name": "reverse", "batch_size": 64, "length": 32})
    task = DATASETS["reverse"](batch_size=64, length=32)          # the same

Every dataset takes the common keys (``batch_size``, ``eval_batch_size``, ``data_dir``,
``seed``, ``cache``) plus its own size keys, listed in ``DATASETS[name].defaults``.
``data_dir`` None means ``$TFDS_DATA_DIR``, else tfds's default ``~/tensorflow_datasets``.
Our generated datasets are written there on first use and reused afterwards.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from attn.data import dates, listops, loaders, mqar, sequence_tasks
from attn.data.builder import SizedConfig
from attn.data.task import Task, check_batching

__all__ = ["COMMON_DEFAULTS", "DATASETS", "DatasetSpec", "get_task", "resolve_data_dir"]

# Keys every dataset takes; "cache" has a per-dataset default in DatasetSpec.defaults.
COMMON_DEFAULTS: dict[str, Any] = {
    "batch_size": 32,
    "eval_batch_size": None,
    "data_dir": None,
    "seed": 0,
}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A catalog entry. Calling it with config keys returns the :class:`Task`."""

    name: str
    description: str
    defaults: Mapping[str, Any]  # the dataset's own keys and their defaults
    load: Callable[..., Task]  # load(options, data_dir, **Task fields) -> Task

    def __call__(self, **config: Any) -> Task:
        return get_task({"name": self.name, **config})


def resolve_data_dir(data_dir: str | os.PathLike | None) -> str:
    """``data_dir``, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets`` (read now)."""
    if data_dir:
        return os.fspath(data_dir)
    return os.environ.get("TFDS_DATA_DIR") or os.path.join(
        os.path.expanduser("~"), "tensorflow_datasets"
    )


def _generated_spec(
    name: str, description: str, config_cls: type[SizedConfig], load: Callable[..., Task]
) -> DatasetSpec:
    return DatasetSpec(
        name, description, {**loaders.config_fields(config_cls), "cache": True}, load
    )


DATASETS: dict[str, DatasetSpec] = {
    "reverse": _generated_spec(
        "reverse",
        "tag: output the input sequence reversed",
        sequence_tasks.SequenceConfig,
        functools.partial(loaders.load_sequence, sequence_tasks.AttnReverse),
    ),
    "copy": _generated_spec(
        "copy",
        "tag: output the input sequence unchanged",
        sequence_tasks.SequenceConfig,
        functools.partial(loaders.load_sequence, sequence_tasks.AttnCopy),
    ),
    "sort": _generated_spec(
        "sort",
        "tag: output the input sequence sorted",
        sequence_tasks.SequenceConfig,
        functools.partial(loaders.load_sequence, sequence_tasks.AttnSort),
    ),
    "mqar": _generated_spec(
        "mqar",
        "lm: multi-query associative recall (Zoology), scored at query positions",
        mqar.MqarConfig,
        loaders.load_mqar,
    ),
    "dates": _generated_spec(
        "dates",
        "seq2seq: human-readable date -> ISO 8601, test dates held out of training",
        dates.DatesConfig,
        loaders.load_dates,
    ),
    "listops": DatasetSpec(
        "listops",
        "classify: value of a nested ListOps expression (LRA semantics)",
        # Not cached by default: 96k examples of up to 2000 tokens.
        {**loaders.config_fields(listops.ListopsConfig), "cache": False},
        loaders.load_listops,
    ),
    "tiny_shakespeare": DatasetSpec(
        "tiny_shakespeare",
        "lm: next byte of Shakespeare, in windows of seq_len (TFDS catalog)",
        {"seq_len": 256, "cache": False},
        loaders.load_tiny_shakespeare,
    ),
    "imdb_reviews": DatasetSpec(
        "imdb_reviews",
        "classify: sentiment of a movie review, bytes truncated to max_length (TFDS catalog)",
        {"max_length": 1000, "cache": False},
        loaders.load_imdb_reviews,
    ),
}


def _check_value(name: str, key: str, value: Any, default: Any) -> None:
    """Types follow the default's; sizes are validated again by the builder configs."""
    if key in ("data_dir", "eval_batch_size") or (value is None and default is None):
        return
    if isinstance(default, bool):
        ok = isinstance(value, (bool, np.bool_))
    elif isinstance(default, int):
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    elif isinstance(default, tuple):
        ok = isinstance(value, (int, tuple, list))
    else:
        ok = True
    if not ok:
        raise ValueError(
            f"dataset {name!r}: {key} must be like {default!r} ({type(default).__name__}), "
            f"got {value!r}"
        )


def get_task(config: Mapping[str, Any] | Any) -> Task:
    """The :class:`Task` for ``config`` (a dict or ``ml_collections.ConfigDict``).

    ``config.name`` picks the dataset; unknown names or keys raise ValueError listing the
    valid ones.
    """
    options = dict(config.to_dict() if hasattr(config, "to_dict") else config)
    name = options.pop("name", None)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset name {name!r}; valid names: {', '.join(DATASETS)}")
    spec = DATASETS[name]
    allowed = {**COMMON_DEFAULTS, **spec.defaults}
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown config keys {unknown} for dataset {name!r}; valid keys: "
            f"{', '.join(sorted(allowed))}"
        )
    for key, value in options.items():
        _check_value(name, key, value, allowed[key])
    merged = {**allowed, **options}
    data_dir = resolve_data_dir(merged.pop("data_dir"))
    batching = {key: merged.pop(key) for key in ("batch_size", "eval_batch_size", "seed", "cache")}
    check_batching(batching["batch_size"], batching["eval_batch_size"], batching["seed"])
    resolved = {"name": name, "data_dir": data_dir, **batching, **merged}
    return spec.load(merged, data_dir, name=name, config=resolved, **batching)
