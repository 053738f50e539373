"""Orbax checkpoints: the latest few (periodic and final, for resuming) and the best by metric."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp


class Checkpoints:
    """Two orbax ``CheckpointManager`` directories under ``workdir/checkpoints``.

    ``latest/`` keeps the ``max_to_keep`` newest states and is what a re-run resumes from;
    ``best/`` keeps the one state with the best ``best_metric``. Saves are synchronous and
    atomic (orbax writes a temporary directory and renames it), so a run killed at any moment
    leaves only complete checkpoints behind.
    """

    def __init__(self, workdir: Path, *, max_to_keep: int, best_metric: str, best_mode: str):
        root = Path(workdir).absolute() / "checkpoints"
        self.best_metric = best_metric
        self.latest = ocp.CheckpointManager(
            root / "latest",
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, enable_async_checkpointing=False, create=True
            ),
        )
        self.best = ocp.CheckpointManager(
            root / "best",
            options=ocp.CheckpointManagerOptions(
                max_to_keep=1,
                best_fn=lambda metrics: metrics[best_metric],
                best_mode=best_mode,
                enable_async_checkpointing=False,
                create=True,
            ),
        )

    def save(self, step: int, state: Any) -> None:
        if step not in self.latest.all_steps():
            self.latest.save(step, args=ocp.args.StandardSave(state))

    def save_if_best(self, step: int, state: Any, metrics: dict[str, float]) -> None:
        if step not in self.best.all_steps():
            self.best.save(step, args=ocp.args.StandardSave(state), metrics=metrics)

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def restore(self, abstract_state: Any, *, which: str = "latest") -> tuple[int, Any] | None:
        """``(step, state)`` from ``latest`` or ``best``, or None if there is none."""
        manager = {"latest": self.latest, "best": self.best}[which]
        step = manager.best_step() if which == "best" else manager.latest_step()
        if step is None:
            return None
        return step, manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

    def close(self) -> None:
        self.latest.close()
        self.best.close()
