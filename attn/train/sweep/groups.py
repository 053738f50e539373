"""Which trials share one compiled program: those whose configs differ only in values that
can be arrays.

A trial's *program key* is its config with those values blanked: the seeds (``train.seed``
picks the initial parameters and dropout keys, ``data.seed`` the batch order), the optimizer's
numbers (``optim.learning_rate``, float ``optim.kwargs`` and the gradient-clip norm live in the
optimizer state, see :mod:`attn.train.optim`) and the model's float options (dropout rates,
and float arguments of score and weighting specs such as a softmax temperature, see
:func:`attn.models.options.float_values`). Everything else (shapes, layer counts, the
optimizer family, dtypes, the implementation, schedule lengths, the run length) is in the key,
so trials that differ there run in separate programs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from attn.models.options import blank_floats
from attn.train.sweep.trials import Trial

__all__ = ["VMAPPED_KEYS", "plan_programs", "program_key", "varying_keys"]

# Keys that may differ within a program besides the model's float options.
VMAPPED_KEYS = ("train.seed", "data.seed", "optim.learning_rate", "optim.grad_clip_norm")
_BLANK = "<per trial>"


def _blanked(trial: Trial) -> dict[str, Any]:
    config = trial.config.to_dict()
    config["train"]["seed"] = _BLANK
    config["data"]["seed"] = _BLANK
    optim = config["optim"]
    optim["learning_rate"] = _BLANK
    # Clipping or not is structure; the norm is a number in the optimizer state.
    optim["grad_clip_norm"] = bool(optim["grad_clip_norm"])
    optim["kwargs"] = {
        key: _BLANK if isinstance(value, float) else value
        for key, value in (optim.get("kwargs") or {}).items()
    }
    config["model"] = blank_floats(trial.checked.model, _BLANK)
    return config


def program_key(trial: Trial) -> str:
    """A short hash equal for trials that can share one vmapped program (an RL trial runs in
    a program of its own: the RL loop is not vmapped over trials)."""
    blanked = {"rl_trial": trial.id} if "env" in trial.config else _blanked(trial)
    text = json.dumps(blanked, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def varying_keys(trials: Sequence[Trial]) -> list[str]:
    """The dotted keys whose values differ among ``trials`` (of one program)."""
    flat = [_flatten(trial.config.to_dict()) for trial in trials]
    keys = sorted(set().union(*flat))
    return [key for key in keys if len({repr(f.get(key)) for f in flat}) > 1]


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def plan_programs(trials: Sequence[Trial], max_per_program: int) -> list[list[Trial]]:
    """``trials`` split into programs of at most ``max_per_program`` trials with one key, in
    the order the trials first appear."""
    if max_per_program < 1:
        raise ValueError(f"max_per_program must be >= 1, got {max_per_program}")
    by_key: dict[str, list[Trial]] = {}
    for trial in trials:
        by_key.setdefault(program_key(trial), []).append(trial)
    return [
        members[start : start + max_per_program]
        for members in by_key.values()
        for start in range(0, len(members), max_per_program)
    ]
