"""``metrics.jsonl`` (one JSON object per logged step) and TensorBoard event files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tensorboardX import SummaryWriter  # writes event files without TensorFlow


class MetricWriter:
    """Appends ``{"step", "split", <metrics>...}`` lines and mirrors scalars to TensorBoard.

    On resume from step ``s`` the lines logged after ``s`` by the interrupted run are dropped,
    so the file reads as one uninterrupted run. Not ``enabled`` (a process other than a
    multi-process run's first) it writes nothing.
    """

    def __init__(self, workdir: Path, *, resume_step: int = 0, enabled: bool = True):
        self.path = workdir / "metrics.jsonl"
        self.enabled = enabled
        if not enabled:
            return
        if self.path.exists():
            kept = [
                line for line in self.path.read_text().splitlines() if _step_of(line) <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))
        self._tensorboard = SummaryWriter(str(workdir / "tensorboard"))

    def write(self, step: int, split: str, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": step, "split": split, **values}
        with self.path.open("a") as stream:
            stream.write(json.dumps(record) + "\n")
        for name, value in values.items():
            if isinstance(value, int | float) and math.isfinite(value):
                self._tensorboard.add_scalar(f"{split}/{name}", value, step)
            elif isinstance(value, str):
                self._tensorboard.add_text(f"{split}/{name}", value, step)
        self._tensorboard.flush()

    def close(self) -> None:
        if self.enabled:
            self._tensorboard.close()


def _step_of(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf  # a line cut short by a crash is dropped


def read_metrics(workdir: Path) -> list[dict[str, Any]]:
    """All records of ``workdir/metrics.jsonl``."""
    path = Path(workdir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
