"""Orbax checkpoints: the latest few (periodic and final, for resuming) and the best by metric."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from attn.train import distributed

logger = logging.getLogger(__name__)


class Checkpoints:
    """Two orbax ``CheckpointManager`` directories under ``workdir/checkpoints``.

    ``latest/`` keeps the ``max_to_keep`` newest states and is what a re-run resumes from;
    ``best/`` keeps the one state with the best ``best_metric``. Saves are synchronous and
    atomic (orbax writes a temporary directory and renames it), so a run killed at any moment
    leaves only complete checkpoints behind. A checkpoint damaged afterwards (a truncated file)
    is skipped on restore in favour of the newest readable one. ``read_only`` ones (for
    evaluating a workdir, maybe while its run goes on) create, clean up and move nothing, and
    are not saved with. Under ``jax.distributed`` every process makes the same calls (orbax
    writes each process's shards and process 0 the metadata).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        max_to_keep: int,
        best_metric: str,
        best_mode: str,
        read_only: bool = False,
    ):
        root = Path(workdir).absolute() / "checkpoints"
        self.read_only = read_only
        # Not orbax's own read_only option: it logs a warning on every use. These managers
        # only read because nothing here saves with them.
        writable = {
            "create": not read_only,
            # Leftovers of a save that was cut short (a second Ctrl-C): never while a run may
            # be writing one, so only by the run itself, which holds the workdir lock.
            "cleanup_tmp_directories": not read_only,
            "enable_async_checkpointing": False,
        }
        self.latest = ocp.CheckpointManager(
            root / "latest",
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, **writable),
        )
        self.best = ocp.CheckpointManager(
            root / "best",
            options=ocp.CheckpointManagerOptions(
                max_to_keep=1,
                best_fn=lambda metrics: metrics[best_metric],
                best_mode=best_mode,
                **writable,
            ),
        )

    def save(self, step: int, state: Any) -> Path:
        """Save ``state`` as ``step`` in ``latest/`` (unless it is there); returns its path."""
        if step not in self.latest.all_steps():
            self.latest.save(step, args=ocp.args.StandardSave(state))
        return Path(self.latest.directory) / str(step)

    def save_if_best(self, step: int, state: Any, metrics: dict[str, float]) -> None:
        if step not in self.best.all_steps():
            self.best.save(step, args=ocp.args.StandardSave(state), metrics=metrics)

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def restore(
        self, abstract_state: Any, *, which: str = "latest", step: int | None = None
    ) -> tuple[int, Any] | None:
        """``(step, state)`` from ``latest`` or ``best``, or None if there is no checkpoint
        (with ``step``: that step's, or None if it is not kept).

        An unreadable checkpoint (truncated or missing files) is passed over, with a warning,
        for the next one (newest first); a run also moves it aside to ``<step>.unreadable-<time>``
        so that it saves that step afresh. If none is readable (more likely a mismatch than
        damage everywhere) nothing is moved: a ValueError names the directory and the errors.
        """
        manager = {"latest": self.latest, "best": self.best}[which]
        if step is not None:
            candidates = [step] if step in manager.all_steps() else []
        else:
            first = manager.best_step() if which == "best" else manager.latest_step()
            others = sorted(set(manager.all_steps()) - {first}, reverse=True)
            candidates = [] if first is None else [first, *others]
        if not candidates:
            return None
        failures: dict[int, str] = {}
        for candidate in candidates:
            try:
                state = manager.restore(candidate, args=ocp.args.StandardRestore(abstract_state))
            except Exception as error:  # orbax/tensorstore raise many kinds for a damaged file
                _drop_closed_loop_reports()
                failures[candidate] = _first_line(error)
                continue
            for bad, error in failures.items():
                self._pass_over(manager, bad, error)
            return candidate, state
        errors = "; ".join(f"step {step}: {error}" for step, error in failures.items())
        raise ValueError(f"no readable checkpoint in {manager.directory} ({errors})")

    def _pass_over(self, manager: ocp.CheckpointManager, step: int, error: str) -> None:
        path = Path(manager.directory) / str(step)
        if self.read_only:
            logger.warning("checkpoint %s is unreadable (%s); skipped", path, error)
            return
        aside = path.with_name(f"{step}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
        if distributed.is_primary():
            path.rename(aside)
        # Every process must then list the same steps, or they would disagree on what to save.
        multihost_utils.sync_global_devices(f"checkpoint {path} moved aside")
        manager.reload()
        logger.warning("checkpoint %s is unreadable (%s); moved to %s", path, error, aside)

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def _drop_closed_loop_reports() -> None:
    """Keep tracebacks that say nothing off stderr after a failed restore.

    orbax closes its event loop as soon as one read fails, while tensorstore still has the
    others in flight; each of those then reports "RuntimeError: Event loop is closed" as an
    unraisable exception, a traceback on stderr. Exactly those are dropped; anything else goes
    to the hook that was there before.
    """
    previous = sys.unraisablehook
    if getattr(previous, "drops_closed_loop_reports", False):
        return

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        error = unraisable.exc_value
        if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
            previous(unraisable)

    hook.drops_closed_loop_reports = True
    sys.unraisablehook = hook


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:300] if lines else ''}"
