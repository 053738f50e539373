"""A finished (or partly finished) sweep as files: ``sweep.jsonl`` (one line per trial),
``results.md`` (a table sorted by the best metric, mean ± std over seeds) and ``plots/``
(the metric against each swept key with error bars over seeds; every trial's learning curve).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt
import numpy as np

from attn.train.sweep.space import display_name
from attn.train.writer import read_metrics

__all__ = ["TrialRecord", "is_seed", "write_summary"]


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """One line of ``sweep.jsonl``."""

    id: str
    name: str
    overrides: dict[str, Any]
    status: str  # "done", "failed", "pending", "running"
    group: str  # trials with equal group ran in one vmapped program
    best: float | None = None  # best eval value of train.best_metric
    best_step: int | None = None
    final: dict[str, Any] = dataclasses.field(default_factory=dict)  # last eval record
    wall_seconds: float | None = None
    error: str | None = None


def is_seed(key: str) -> bool:
    """Keys over which results are averaged rather than compared (``train.seed``, ...)."""
    return key.rpartition(".")[2].endswith("seed")


def _setting(record: TrialRecord) -> tuple[tuple[str, Any], ...]:
    """The trial's overrides without its seeds: trials with equal settings are repeats."""
    return tuple(sorted((k, v) for k, v in record.overrides.items() if not is_seed(k)))


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _results_table(records: Sequence[TrialRecord], metric: str, mode: str) -> str:
    done = [r for r in records if r.status == "done" and r.best is not None]
    groups: dict[tuple, list[TrialRecord]] = defaultdict(list)
    for record in done:
        groups[_setting(record)].append(record)
    rows = []
    for setting, members in groups.items():
        mean, std = _mean_std([r.best for r in members])
        seconds = [r.wall_seconds for r in members if r.wall_seconds is not None]
        rows.append((mean, std, len(members), display_name(dict(setting)) or "(base)", seconds))
    rows.sort(key=lambda row: row[0], reverse=(mode == "max"))
    lines = [
        f"| setting | best {metric} (mean ± std) | seeds | program wall s |",
        "|:---|---:|---:|---:|",
    ]
    for mean, std, count, name, seconds in rows:
        wall = f"{np.mean(seconds):.0f}" if seconds else "—"
        lines.append(f"| {name} | {mean:.4f} ± {std:.4f} | {count} | {wall} |")
    unfinished = [r for r in records if r.status != "done"]
    if unfinished:
        lines += ["", "Not finished: " + ", ".join(f"{r.name} ({r.status})" for r in unfinished)]
    return "\n".join(lines) + "\n"


def _plot_against_keys(records: Sequence[TrialRecord], metric: str, path: Path) -> Path | None:
    """The best metric against each swept (non-seed) key: mean and std over trials that share
    that key's value."""
    done = [r for r in records if r.status == "done" and r.best is not None]
    keys = sorted({k for r in done for k in r.overrides if not is_seed(k)})
    numeric = [k for k in keys if all(isinstance(r.overrides.get(k), int | float) for r in done)]
    if not numeric:
        return None
    figure, axes = plt.subplots(1, len(numeric), figsize=(4.5 * len(numeric), 3.5), squeeze=False)
    for axis, key in zip(axes.flat, numeric, strict=True):
        by_value: dict[float, list[float]] = defaultdict(list)
        for record in done:
            by_value[record.overrides[key]].append(record.best)
        xs = sorted(by_value)
        stats = [_mean_std(by_value[x]) for x in xs]
        axis.errorbar(xs, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=3)
        positive = all(x > 0 for x in xs)
        if positive and ("learning_rate" in key or (len(xs) > 1 and max(xs) / min(xs) >= 10)):
            axis.set_xscale("log")
        axis.set_xlabel(key)
        axis.set_ylabel(f"best {metric}")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def _plot_curves(records: Sequence[TrialRecord], trials_dir: Path, path: Path) -> Path | None:
    """Every trial's eval curve of each logged metric, one line per trial."""
    curves = {r.name: read_metrics(trials_dir / r.id) for r in records}
    names = [
        name
        for name in ("loss", "accuracy", "sequence_accuracy")
        if any(name in row for rows in curves.values() for row in rows)
    ]
    if not names:
        return None
    figure, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.8), squeeze=False)
    for axis, name in zip(axes.flat, names, strict=True):
        for label, rows in curves.items():
            points = [(r["step"], r[name]) for r in rows if r["split"] == "eval" and name in r]
            if points:
                axis.plot(*zip(*points, strict=True), marker=".", label=label)
        axis.set_xlabel("step")
        axis.set_title(f"eval {name}")
        axis.grid(alpha=0.3)
    if len(curves) <= 16:
        axes.flat[-1].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def write_summary(
    workdir: Path, records: Sequence[TrialRecord], metric: str, mode: str
) -> list[Path]:
    """Write ``sweep.jsonl``, ``results.md`` and the plots; return the paths written."""
    workdir = Path(workdir)
    lines = [json.dumps(dataclasses.asdict(r), default=_json_default) for r in records]
    (workdir / "sweep.jsonl").write_text("".join(line + "\n" for line in lines))
    (workdir / "results.md").write_text(
        f"# Sweep results: best eval {metric} ({mode})\n\n" + _results_table(records, metric, mode)
    )
    paths = [workdir / "sweep.jsonl", workdir / "results.md"]
    plots = workdir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    for written in (
        _plot_against_keys(records, metric, plots / f"{metric}_vs_keys.png"),
        _plot_curves(records, workdir / "trials", plots / "curves.png"),
    ):
        if written is not None:
            paths.append(written)
    return paths


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return repr(value)
