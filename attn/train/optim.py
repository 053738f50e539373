"""Optimizers and schedules, built from optax by name.

``optim.name`` is any optax optimizer (``"adamw"``, ``"lion"``, ...); its keyword arguments come
from ``optim.kwargs``. The learning rate lives in the optimizer state as an array
(``optax.inject_hyperparams``) so sweeps can vmap over it; the schedule named by
``optim.schedule`` multiplies it (schedules are written as multipliers: peak 1.0).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optax


def _optax_attribute(name: str, what: str) -> Callable[..., Any]:
    attribute = getattr(optax, name, None)
    if not callable(attribute) or name.startswith("_"):
        raise ValueError(
            f"optim.{what}: {name!r} is not an optax {what} (see optax's documentation)"
        )
    return attribute


def build_schedule(optim: Any) -> optax.Schedule:
    """The learning-rate multiplier ``step -> float`` named by ``optim.schedule``."""
    name = optim.get("schedule", "constant_schedule")
    kwargs = dict(optim.get("schedule_kwargs", {}) or {})
    if name == "constant_schedule":
        kwargs.setdefault("value", 1.0)
    try:
        return _optax_attribute(name, "schedule")(**kwargs)
    except TypeError as error:
        raise ValueError(f"optim.schedule {name!r} with {kwargs}: {error}") from None


def build_optimizer(optim: Any) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Gradient clipping -> optax optimizer with injected hyperparameters -> schedule.

    Returns the transformation and ``learning_rate(step)`` for logging.
    """
    optimizer = _optax_attribute(optim.name, "optimizer")
    schedule = build_schedule(optim)
    hyperparameters = {"learning_rate": optim.learning_rate, **dict(optim.get("kwargs", {}) or {})}
    try:
        inner = optax.inject_hyperparams(optimizer)(**hyperparameters)
    except TypeError as error:
        raise ValueError(f"optim: optax.{optim.name}{hyperparameters}: {error}") from None
    parts = []
    if optim.get("grad_clip_norm"):
        parts.append(optax.clip_by_global_norm(optim.grad_clip_norm))
    parts += [inner, optax.scale_by_schedule(schedule)]

    def learning_rate(step: int) -> float:
        return float(optim.learning_rate * schedule(step))

    return optax.chain(*parts), learning_rate
