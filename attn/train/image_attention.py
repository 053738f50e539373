"""``attn plot`` for image tasks: where a captioner looks for each word it writes, and where a
ViT's class token looks (per head of the last layer, and rolled out over all layers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from attn.data.images import to_pixels
from attn.train.image_plots import attention_rollout, plot_region_attention
from attn.train.plots import layer_number, tokens_through_eos

__all__ = ["image_attention_plots", "vit_panels"]


def vit_panels(maps: dict[str, np.ndarray], cls_token: bool) -> list[tuple[str, np.ndarray]]:
    """Panels for one example's ViT maps (``"encoder/layer{i}/self"`` -> ``[N, T, T]``): the
    last layer's attention per head and the rollout over all layers, from the class token
    (``cls_token``) or averaged over the patches (mean pooling), over the patches ``[P]``."""
    layers = [maps[name] for name in sorted(maps, key=layer_number)]
    first = 1 if cls_token else 0  # the patches' column offset

    def pooled(rows_tt: np.ndarray) -> np.ndarray:
        weights = rows_tt[0, first:] if cls_token else rows_tt[:, first:].mean(axis=0)
        return weights / max(float(weights.sum()), 1e-9)

    last = layers[-1]
    panels = [(f"last layer, head {n}", pooled(last[n])) for n in range(last.shape[0])]
    panels.append((f"rollout ({len(layers)} layers)", pooled(attention_rollout(layers))))
    return panels


def image_attention_plots(experiment: Any, batch: dict[str, np.ndarray], tag: str) -> list[Path]:
    """Draw every example of ``batch`` into ``workdir/plots``; returns the paths."""
    task = experiment.task
    model = experiment.model(experiment.host_params())
    arrays = {name: jnp.asarray(value) for name, value in batch.items()}
    plots = experiment.workdir / "plots"
    paths = []
    if hasattr(model, "word_alignment"):
        words_bu = np.asarray(model.predict(arrays))
        alignment_bup = np.asarray(model.word_alignment(arrays)).mean(axis=1)  # over heads
        for index, words in enumerate(words_bu):
            count = tokens_through_eos(words)
            labels = task.target_tokenizer.token_strings(words[:count])
            panels = [(f"{i}: {label}", alignment_bup[index, i]) for i, label in enumerate(labels)]
            caption = task.target_tokenizer.decode(words)
            paths.append(
                plot_region_attention(
                    to_pixels(batch["inputs"][index]),
                    panels,
                    model.grid_shape,
                    plots / f"attention_words_example{index}{tag}.png",
                    title=f"{task.name} example {index}: {caption!r}",
                )
            )
        return paths
    maps = {name: np.asarray(value) for name, value in model.attention_maps(arrays).items()}
    predicted_b = np.asarray(model.predict(arrays))
    names = task.target_tokenizer.token_strings
    for index in range(len(predicted_b)):
        panels = vit_panels(
            {name: value[index] for name, value in maps.items()}, model.pool == "cls"
        )
        truth = names([int(batch["targets"][index])])[0]
        paths.append(
            plot_region_attention(
                to_pixels(batch["inputs"][index]),
                panels,
                model.grid_shape,
                plots / f"attention_cls_example{index}{tag}.png",
                title=f"{task.name} example {index}: predicted {names([predicted_b[index]])[0]}, "
                f"true {truth}",
            )
        )
    return paths
