"""PNG pictures: attention maps per head with tokens on the axes, and training curves."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt
import numpy as np

from attn.data.tokenizers import EOS_ID

MAX_LABELLED_TOKENS = 64  # beyond this tick labels overlap into a black bar


def plot_attention(
    weights_nts: np.ndarray,
    query_tokens: Sequence[str],
    key_tokens: Sequence[str],
    path: Path,
    *,
    title: str = "",
) -> Path:
    """One panel per head of ``weights [N, T, S]``: rows are queries, columns keys."""
    weights_nts = np.asarray(weights_nts, np.float32)
    num_heads, T, S = weights_nts.shape
    columns = min(num_heads, 4)
    rows = math.ceil(num_heads / columns)
    size = max(4.0, min(8.0, 0.18 * max(T, S)))
    figure, axes = plt.subplots(rows, columns, figsize=(size * columns, size * rows), squeeze=False)
    for head, axis in enumerate(axes.flat):
        if head >= num_heads:
            axis.axis("off")
            continue
        axis.imshow(
            weights_nts[head], cmap="viridis", vmin=0.0, aspect="auto", interpolation="nearest"
        )
        axis.set_title(f"head {head}", fontsize=9)
        if T <= MAX_LABELLED_TOKENS and S <= MAX_LABELLED_TOKENS:
            axis.set_yticks(range(T), [str(t) for t in query_tokens[:T]], fontsize=7)
            axis.set_xticks(range(S), [str(t) for t in key_tokens[:S]], fontsize=7, rotation=90)
        axis.set_xlabel("key")
        axis.set_ylabel("query")
    return save_figure(figure, path, title=title)


def layer_number(name: str) -> int:
    """``i`` of an attention map named ``"encoder/layer{i}/self"`` (attn.models naming)."""
    return int(name.split("/")[1].removeprefix("layer"))


def tokens_through_eos(tokens: np.ndarray) -> int:
    """How many tokens to show: up to and including the first EOS (all if there is none)."""
    eos = np.flatnonzero(np.asarray(tokens) == EOS_ID)
    return int(eos[0]) + 1 if len(eos) else len(tokens)


def save_figure(figure: Any, path: Path, *, title: str = "", dpi: int = 90) -> Path:
    """Title, lay out and write ``figure`` to ``path`` (folders created), then close it."""
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path


def plot_curves(
    records: list[dict[str, Any]],
    path: Path,
    metrics: Sequence[str] = ("loss", "accuracy", "sequence_accuracy", "cer", "wer"),
) -> Path | None:
    """``metrics`` (those present) against step for every split in ``metrics.jsonl`` records."""
    names = [name for name in metrics if any(name in r for r in records)]
    if not names:
        return None
    figure, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
    for axis, name in zip(axes.flat, names, strict=True):
        for split in sorted({r["split"] for r in records}):
            points = [(r["step"], r[name]) for r in records if r["split"] == split and name in r]
            if points:
                steps, values = zip(*points, strict=True)
                axis.plot(steps, values, marker="." if len(points) < 30 else None, label=split)
        axis.set_xlabel("step")
        axis.set_title(name)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
