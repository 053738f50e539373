"""Sweeps: an experiment's ``sweep(arg)`` lists dotted overrides (written with :func:`grid` and
:func:`random`), and ``attn sweep`` runs them, vmapping trials that can share a program.

Modules: :mod:`.space` (what is tried), :mod:`.trials` (validated trials), :mod:`.groups`
(which trials share a program), :mod:`.vmapped` (K trials in one program), :mod:`.study` (the
Optuna study that hands trials to workers), :mod:`.runner` (``attn sweep``) and :mod:`.summary`
(``sweep.jsonl``, ``results.md`` and plots).
"""

from attn.train.sweep.space import choice, grid, loguniform, random, uniform

__all__ = ["choice", "grid", "loguniform", "random", "uniform"]
