"""Optimizers and schedules, built from optax by name.

``optim.name`` is any optax optimizer (``"adamw"``, ``"lion"``, ...); its keyword arguments come
from ``optim.kwargs``. The learning rate lives in the optimizer state as an array
(``optax.inject_hyperparams``) so sweeps can vmap over it; the schedule named by
``optim.schedule`` multiplies it (schedules are written as multipliers: peak 1.0). So do the
other numeric ``optim.kwargs`` and the gradient-clip norm. A
schedule's run length follows ``train.num_steps`` unless ``optim.schedule_kwargs`` sets it,
so shortening or lengthening a run keeps the schedule's shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optax

__all__ = ["RUN_LENGTH_ARGUMENT", "build_optimizer", "build_schedule"]

# optax schedules whose argument is the run's whole length, and that argument's name. Other
# schedules (exponential_decay's transition_steps is a period, not a length) are left alone.
RUN_LENGTH_ARGUMENT = {
    "cosine_decay_schedule": "decay_steps",
    "warmup_cosine_decay_schedule": "decay_steps",
    "linear_schedule": "transition_steps",
    "polynomial_schedule": "transition_steps",
    "linear_onecycle_schedule": "transition_steps",
    "cosine_onecycle_schedule": "transition_steps",
}


def _optax_attribute(name: str, what: str) -> Callable[..., Any]:
    attribute = getattr(optax, name, None)
    if not isinstance(name, str) or not callable(attribute) or name.startswith("_"):
        raise ValueError(
            f"optim.{'name' if what == 'optimizer' else what}: {name!r} is not an optax "
            f"{what} (see optax's documentation)"
        )
    return attribute


def build_schedule(optim: Any, num_steps: int) -> optax.Schedule:
    """The learning-rate multiplier ``step -> float`` named by ``optim.schedule``, its run
    length (:data:`RUN_LENGTH_ARGUMENT`) set to ``num_steps`` unless given."""
    name = optim.schedule
    kwargs = dict(optim.schedule_kwargs or {})
    if name == "constant_schedule":
        kwargs.setdefault("value", 1.0)
    if name in RUN_LENGTH_ARGUMENT:
        length = RUN_LENGTH_ARGUMENT[name]
        kwargs.setdefault(length, num_steps)
        warmup = kwargs.get("warmup_steps")
        if isinstance(warmup, int) and isinstance(kwargs[length], int) and warmup >= kwargs[length]:
            raise ValueError(
                f"optim.schedule_kwargs.warmup_steps={warmup} must be less than the schedule's "
                f"{length}={kwargs[length]} (train.num_steps unless set in schedule_kwargs)"
            )
    try:
        return _optax_attribute(name, "schedule")(**kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(f"optim.schedule_kwargs: optax.{name}({kwargs}): {error}") from None


def build_optimizer(
    optim: Any, num_steps: int
) -> tuple[optax.GradientTransformation, Callable[[int], float]]:
    """Gradient clipping -> optax optimizer with injected hyperparameters -> schedule.

    ``optim`` has the fields of :class:`attn.train.config.OptimOptions`. Returns the
    transformation and ``learning_rate(step)`` for logging.
    """
    optimizer = _optax_attribute(optim.name, "optimizer")
    schedule = build_schedule(optim, num_steps)
    hyperparameters = {"learning_rate": optim.learning_rate, **dict(optim.kwargs or {})}
    try:
        inner = optax.inject_hyperparams(optimizer)(**hyperparameters)
    except (TypeError, ValueError) as error:
        raise ValueError(f"optim.kwargs: optax.{optim.name}({hyperparameters}): {error}") from None
    parts = []
    if optim.grad_clip_norm:
        # Injected like the learning rate: the clip norm is an array in the state, so trials
        # that differ only in it share one vmapped program.
        parts.append(
            optax.inject_hyperparams(optax.clip_by_global_norm)(max_norm=optim.grad_clip_norm)
        )
    parts += [inner, optax.scale_by_schedule(schedule)]

    def learning_rate(step: int) -> float:
        return float(optim.learning_rate * schedule(step))

    return optax.chain(*parts), learning_rate
