"""What a sweep tries: lists of dotted config overrides, written with :func:`grid` and
:func:`random` in an experiment's ``sweep(arg)``.

    def sweep(arg=None):
        return grid(**{"optim.learning_rate": [1e-3, 3e-3], "train.seed": [0, 1]})

    def sweep(arg=None):   # 8 reproducible draws
        return random(8, seed=0, **{"optim.learning_rate": loguniform(1e-4, 1e-2)})

A trial is a dict ``{dotted key: value}``; its id is a short hash of its sorted items (the same
overrides give the same id on every machine) and its name reads ``lr=0.003,seed=1``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "Choice",
    "Draws",
    "LogUniform",
    "Uniform",
    "choice",
    "display_name",
    "grid",
    "loguniform",
    "random",
    "trial_id",
    "uniform",
]

Trial = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Uniform:
    """Uniform on ``[low, high)``."""

    low: float
    high: float

    def __post_init__(self):
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"uniform needs finite low < high, got {self.low}, {self.high}")

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))


@dataclasses.dataclass(frozen=True)
class LogUniform(Uniform):
    """``exp`` of a uniform draw on ``[log low, log high)``: learning rates, weight decays."""

    def __post_init__(self):
        super().__post_init__()
        if self.low <= 0:
            raise ValueError(f"loguniform needs 0 < low, got {self.low}")

    def sample(self, rng: np.random.Generator) -> float:
        return float(np.exp(rng.uniform(np.log(self.low), np.log(self.high))))


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of ``values``, each equally likely."""

    values: tuple[Any, ...]

    def __post_init__(self):
        if not self.values:
            raise ValueError("choice needs at least one value")

    def sample(self, rng: np.random.Generator) -> Any:
        value = self.values[int(rng.integers(len(self.values)))]
        return value.item() if isinstance(value, np.generic) else value


Distribution = Uniform | LogUniform | Choice


def uniform(low: float, high: float) -> Uniform:
    """A float drawn uniformly from ``[low, high)``."""
    return Uniform(float(low), float(high))


def loguniform(low: float, high: float) -> LogUniform:
    """A float whose logarithm is uniform on ``[log low, log high)``."""
    return LogUniform(float(low), float(high))


def choice(*values: Any) -> Choice:
    """One of ``values`` (numbers, strings, booleans)."""
    return Choice(tuple(values))


def _axes(axes: Mapping[str, Any] | None, more: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys from a mapping and/or keyword arguments (``optim__learning_rate`` may spell
    ``optim.learning_rate`` where a keyword cannot hold a dot)."""
    merged = {**(axes or {}), **{key.replace("__", "."): value for key, value in more.items()}}
    for key in merged:
        if not isinstance(key, str) or "." not in key:
            raise ValueError(
                f"sweep keys are dotted config keys such as 'optim.learning_rate', got {key!r}"
            )
    return merged


def grid(axes: Mapping[str, Sequence[Any]] | None = None, **more: Sequence[Any]) -> list[Trial]:
    """Every combination of the values of each key, the last key varying fastest:
    ``grid(**{"optim.learning_rate": [1e-3, 3e-3], "train.seed": [0, 1]})`` is 4 trials."""
    merged = _axes(axes, more)
    for key, values in merged.items():
        if isinstance(values, str) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"grid: {key} needs a non-empty list of values, got {values!r}")
    keys = list(merged)
    return [
        dict(zip(keys, combination, strict=True))
        for combination in itertools.product(*(merged[key] for key in keys))
    ]


class Draws(list):
    """The trials of :func:`random` and, as ``.distributions``, what they were drawn from (key ->
    distribution or fixed value): ``attn sweep --search`` samples those instead."""

    distributions: dict[str, Any]


def random(n: int, *, seed: int, axes: Mapping[str, Any] | None = None, **more: Any) -> Draws:
    """``n`` trials, each key drawn from its distribution (:func:`loguniform`, :func:`uniform`,
    :func:`choice`; a plain value is fixed) by a generator seeded with ``seed``: the same list
    on every call."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"random: n must be a positive int, got {n!r}")
    merged = _axes(axes, more)
    rng = np.random.default_rng(seed)
    draws = Draws(
        {
            key: value.sample(rng) if isinstance(value, Distribution) else value
            for key, value in merged.items()
        }
        for _ in range(n)
    )
    draws.distributions = merged
    return draws


def trial_id(overrides: Mapping[str, Any]) -> str:
    """A short stable hash of the sorted overrides: the trial's folder name."""
    text = json.dumps(sorted(overrides.items()), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


_SHORT = {"learning_rate": "lr", "weight_decay": "wd", "dropout_rate": "dropout"}


def _short_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def display_name(overrides: Mapping[str, Any]) -> str:
    """``"lr=0.003,seed=1"``: each key's last part (abbreviated) and its value; keys whose last
    parts collide keep their section (``model.dropout_rate`` vs ``model.attention...``)."""
    leaves = [key.rpartition(".")[2] for key in overrides]
    parts = []
    for key, leaf in zip(overrides, leaves, strict=True):
        name = key if leaves.count(leaf) > 1 else _SHORT.get(leaf, leaf)
        parts.append(f"{name}={_short_value(overrides[key])}")
    return ",".join(parts)
