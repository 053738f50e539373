"""PNG pictures of attention over images: each generated word's attention on the image, and a
ViT's attention from its class token per head with the rollout across layers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt
import numpy as np

from attn.train.plots import save_figure

__all__ = ["attention_rollout", "plot_region_attention", "upsample"]


def upsample(weights_p: np.ndarray, grid_shape: tuple[int, int], image_hw: tuple[int, int]):
    """Region weights ``[P]`` (row-major over ``grid_shape``) as a ``[H, W]`` map: each
    region's weight over its pixels (pixels past the last whole region stay 0)."""
    gh, gw = grid_shape
    H, W = image_hw
    cells = np.asarray(weights_p, np.float32).reshape(gh, gw)
    grid = np.kron(cells, np.ones((H // gh, W // gw), np.float32))
    out = np.zeros((H, W), np.float32)
    out[: grid.shape[0], : grid.shape[1]] = grid
    return out


def attention_rollout(layers_ntt: Sequence[np.ndarray]) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020) ``[T, T]``: per layer the head-averaged
    weights with the residual path added (``0.5 A + 0.5 I``, rows renormalised), multiplied
    from the first layer to the last. Row ``i`` says how much token ``i``'s final state draws
    on each input token."""
    rollout = None
    for weights_ntt in layers_ntt:
        mixed = 0.5 * np.asarray(weights_ntt, np.float64).mean(axis=0)
        mixed += 0.5 * np.eye(mixed.shape[-1])
        mixed /= mixed.sum(axis=-1, keepdims=True)
        rollout = mixed if rollout is None else mixed @ rollout
    if rollout is None:
        raise ValueError("attention_rollout needs at least one layer")
    return rollout


def plot_region_attention(
    image_hwc: np.ndarray,
    panels: Sequence[tuple[str, np.ndarray]],
    grid_shape: tuple[int, int],
    path: Path,
    *,
    title: str = "",
) -> Path:
    """The image, then one panel per ``(label, weights [P])``: the image with the region
    weights over it as a heat map (each panel scaled to its own maximum)."""
    image_hwc = np.asarray(image_hwc, np.float32)
    if image_hwc.shape[-1] == 1:
        image_hwc = np.repeat(image_hwc, 3, axis=-1)
    count = len(panels) + 1
    columns = min(count, 6)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    axes.flat[0].imshow(image_hwc, interpolation="nearest")
    axes.flat[0].set_title("input", fontsize=9)
    for axis, (label, weights_p) in zip(axes.flat[1:], panels, strict=False):
        heat = upsample(weights_p, grid_shape, image_hwc.shape[:2])
        axis.imshow(image_hwc * 0.55, interpolation="nearest")
        axis.imshow(heat, cmap="inferno", alpha=0.6, vmin=0.0, vmax=max(float(heat.max()), 1e-9))
        axis.set_title(label, fontsize=9)
    return save_figure(figure, path, title=title, dpi=100)
