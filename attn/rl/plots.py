"""``attn plot`` of an RL run: a greedy rollout and where the policy looked at each step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt
import numpy as np

from attn.rl.envs import Environment

__all__ = ["plot_rollout"]


def _heatmap(axis: Any, weights_ts: np.ndarray, actions: np.ndarray, labels: list[str]) -> None:
    """Rows: steps; columns: entities (or actions); the chosen one circled."""
    image = axis.imshow(
        weights_ts, cmap="viridis", vmin=0.0, aspect="auto", interpolation="nearest"
    )
    axis.scatter(actions, np.arange(len(actions)), s=12, facecolors="none", edgecolors="red")
    if len(labels) <= 64:
        axis.set_xticks(range(len(labels)), labels, fontsize=6, rotation=90)
    axis.set_xlabel("entity (red: chosen)")
    axis.set_ylabel("step")
    plt.colorbar(image, ax=axis, fraction=0.04, label="policy attention")


def plot_rollout(env: Environment, trace: tuple, path: Path) -> Path:
    """Draw one episode's ``trace`` (from :func:`attn.rl.ppo.greedy_rollout` with
    ``record=True``, one episode: ``obs``, ``action``, ``attention``, ``running`` per step)."""
    obs, actions, attention, running = trace
    steps = int(np.sum(running))
    actions, attention = np.asarray(actions[:steps]), np.asarray(attention[:steps], np.float32)
    if env.draw == "cities":
        coordinates = np.asarray(obs["entities"][0, :, :2])
        figure, (tour_axis, axis) = plt.subplots(1, 2, figsize=(11, 4.8))
        tour = coordinates[np.append(actions, actions[0])]
        length = np.linalg.norm(np.diff(tour, axis=0), axis=-1).sum()
        tour_axis.plot(tour[:, 0], tour[:, 1], "-", color="gray", lw=1)
        # Each city's size: the attention it got at the step that chose it.
        chosen = attention[np.arange(steps), actions]
        tour_axis.scatter(
            coordinates[actions, 0],
            coordinates[actions, 1],
            s=30 + 200 * chosen,
            c=np.arange(steps),
            cmap="plasma",
        )
        for order, city in enumerate(actions):
            tour_axis.annotate(
                str(order), coordinates[city], fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
        tour_axis.set_title(f"greedy tour, length {length:.3f} (numbers: visit order)")
        tour_axis.set_aspect("equal")
        _heatmap(axis, attention, actions, [str(i) for i in range(coordinates.shape[0])])
    elif env.draw == "items":
        weights, values = (np.asarray(obs["entities"][0, :, i]) for i in (0, 1))
        order = np.argsort(-values / np.maximum(weights, 1e-9))  # best value per weight first
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        figure, axis = plt.subplots(figsize=(10, 5))
        _heatmap(axis, attention[:, order], rank[actions], [str(i) for i in order])
        axis.set_title(
            f"items by value/weight (best left); packed value {values[actions].sum():.2f}"
        )
    else:
        figure, axis = plt.subplots(figsize=(5, 6))
        _heatmap(axis, attention, actions, [str(a) for a in range(attention.shape[-1])])
        axis.set_title(f"action probabilities, {steps} steps")
    figure.suptitle(f"{env.name}: greedy rollout", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
