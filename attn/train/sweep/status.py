"""A trial's ``trial.json``: its id, name, overrides and status (``running``, ``done``,
``failed``, ``pruned``, ``interrupted``), with the program it ran in, its wall time and error.
The summary is built from these files, so it covers the trials of every worker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from attn.train.sweep.trials import Trial

__all__ = ["STATUS_FILE", "read_status", "write_status"]

STATUS_FILE = "trial.json"


def write_status(workdir: Path, trial: Trial, status: str, **fields: Any) -> None:
    """Write ``workdir/trials/<id>/trial.json`` atomically."""
    directory = Path(workdir) / "trials" / trial.id
    directory.mkdir(parents=True, exist_ok=True)
    record = {"id": trial.id, "name": trial.name, "overrides": trial.overrides, "status": status}
    temporary = directory / f".{STATUS_FILE}.tmp"
    temporary.write_text(json.dumps({**record, **fields}, default=repr, indent=1))
    temporary.replace(directory / STATUS_FILE)


def read_status(workdir: Path, trial: Trial) -> str | None:
    """The trial's status, or None if it never started."""
    path = Path(workdir) / "trials" / trial.id / STATUS_FILE
    return json.loads(path.read_text())["status"] if path.is_file() else None
