"""A sweep's trials, read from an experiment file and checked before anything runs.

``sweep(arg)`` in the experiment file returns a list of ``{dotted key: value}`` overrides (see
:mod:`attn.train.sweep.space`); each becomes a :class:`Trial`: the base config (the file's
``get_config(arg)`` with the command line's ``--config.KEY=VALUE``) with those overrides, fully
validated, in its own workdir ``W/trials/<id>/``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections

from attn.train import config as config_lib
from attn.train.sweep.space import display_name, trial_id

__all__ = ["Trial", "load_sweep", "load_trials", "make_trial", "trial_config"]


@dataclasses.dataclass(frozen=True)
class Trial:
    """One run of a sweep: its overrides, validated config and workdir name."""

    id: str
    name: str
    overrides: dict[str, Any]
    config: ml_collections.ConfigDict = dataclasses.field(repr=False, compare=False)
    checked: Any = dataclasses.field(repr=False, compare=False)  # the validator's result


def _sweep_function(path: str) -> Any:
    module_spec = importlib.util.spec_from_file_location(f"attn_sweep_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not callable(getattr(module, "sweep", None)):
        raise ValueError(
            f"{path} has no sweep(arg=None) function returning a list of overrides "
            "(see attn.train.sweep.grid and random)"
        )
    return module.sweep


def trial_config(
    base: ml_collections.ConfigDict, overrides: dict[str, Any]
) -> ml_collections.ConfigDict:
    """``base`` with ``overrides`` applied (unknown keys fail as on the command line)."""
    config = ml_collections.ConfigDict(base.to_dict())
    config.lock()
    for key, value in overrides.items():
        config_lib.set_value(config, key, value)
    return config


def _validator(config: ml_collections.ConfigDict) -> Any:
    """The validation of ``config``'s loop: :func:`attn.rl.validate` for an RL config."""
    if "env" in config:
        from attn import rl  # only RL sweeps import the RL loop

        return rl.validate
    return config_lib.validate


def make_trial(base: ml_collections.ConfigDict, overrides: dict[str, Any]) -> Trial:
    """The trial of ``overrides`` on ``base``, its config validated (``ValueError`` naming the
    trial otherwise)."""
    name = display_name(overrides)
    try:
        config = trial_config(base, overrides)
        checked = _validator(config)(config)
    except ValueError as error:
        raise ValueError(f"sweep trial {name}: {error}") from None
    return Trial(trial_id(overrides), name, dict(overrides), config, checked)


def load_sweep(
    spec: str, command_line: Sequence[tuple[str, str]] = ()
) -> tuple[ml_collections.ConfigDict, list[dict[str, Any]]]:
    """``FILE.py[:ARG]``'s ``get_config(ARG)`` with the command line's overrides, and the list
    its ``sweep(ARG)`` returns (unchecked; a :class:`~attn.train.sweep.space.Draws` keeps its
    distributions)."""
    base = config_lib.load_config(spec)
    for key, value in command_line:
        config_lib.apply_override(base, key, value)
    path, _, arg = spec.partition(":")
    overrides_list = _sweep_function(path)(arg or None)
    if not isinstance(overrides_list, list) or not all(isinstance(o, dict) for o in overrides_list):
        raise ValueError(f"{path}: sweep() must return a list of dicts of overrides")
    if not overrides_list:
        raise ValueError(f"{path}: sweep() returned no trials")
    return base, overrides_list


def load_trials(spec: str, command_line: Sequence[tuple[str, str]] = ()) -> list[Trial]:
    """The trials of ``FILE.py[:ARG]``'s ``sweep(ARG)`` on top of its ``get_config(ARG)`` and the
    command line's overrides; every trial's config is validated (a bad key or value fails here,
    naming the trial). Duplicate trials are dropped."""
    base, overrides_list = load_sweep(spec, command_line)
    trials: dict[str, Trial] = {}
    for overrides in overrides_list:
        trial = make_trial(base, overrides)
        trials.setdefault(trial.id, trial)
    return list(trials.values())
