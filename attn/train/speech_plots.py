"""``attn plot`` for speech: the log-mel spectrogram with the decoder's attention alignment above
it, characters on one axis and the input's frames on the other."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt
import numpy as np

from attn.data.tokenizers import EOS_ID
from attn.train.plots import save_figure

__all__ = ["frames_alignment", "plot_alignment", "speech_attention_plots"]

_HOP_SECONDS = 0.010  # the features' hop: one frame per 10 ms


def frames_alignment(alignment_us: np.ndarray, frame_stride: int, frames: int) -> np.ndarray:
    """Encoder-step weights ``[U, S]`` spread over the input's ``frames``: ``[U, frames]``,
    step ``s`` covering frames ``[s * frame_stride, (s + 1) * frame_stride)`` (its weight on
    each, so a row still peaks where the model looks)."""
    spread = np.repeat(np.asarray(alignment_us, np.float32), frame_stride, axis=-1)
    out = np.zeros((spread.shape[0], frames), np.float32)
    width = min(frames, spread.shape[1])
    out[:, :width] = spread[:, :width]
    return out


def plot_alignment(
    log_mel_fm: np.ndarray,
    alignment_us: np.ndarray,
    labels: Sequence[str],
    frame_stride: int,
    path: Path,
    *,
    title: str = "",
) -> Path:
    """Write one figure: above, each output character's attention over time (``alignment
    [U, S]`` over the encoder's steps, ``frame_stride`` input frames each); below, the log-mel
    spectrogram ``[frames, bins]``, on the same time axis."""
    frames = log_mel_fm.shape[0]
    rows = frames_alignment(alignment_us, frame_stride, frames)[: len(labels)]
    seconds = frames * _HOP_SECONDS
    figure, (top, bottom) = plt.subplots(
        2,
        1,
        figsize=(max(6.0, min(16.0, frames / 25)), 2.0 + 0.16 * len(labels) + 2.2),
        sharex=True,
        gridspec_kw={"height_ratios": [max(1.0, 0.16 * len(labels)), 1.2]},
    )
    top.imshow(rows, aspect="auto", cmap="viridis", extent=(0, seconds, len(labels) - 0.5, -0.5))
    top.set_yticks(range(len(labels)), list(labels), fontsize=7)
    top.set_ylabel("output character")
    bottom.imshow(
        np.asarray(log_mel_fm).T,
        aspect="auto",
        origin="lower",
        cmap="magma",
        extent=(0, seconds, 0, log_mel_fm.shape[1]),
    )
    bottom.set_ylabel("mel bin")
    bottom.set_xlabel("time (s)")
    return save_figure(figure, path, title=title)


def speech_attention_plots(experiment: Any, batch: dict[str, np.ndarray], tag: str) -> list[Path]:
    """Draw every example of ``batch`` (audio inputs) into ``workdir/plots`` as
    ``alignment_example{i}{tag}.png``; returns the paths."""
    task = experiment.task
    model = experiment.model(experiment.state["params"])
    arrays = {name: jnp.asarray(value) for name, value in batch.items()}
    predictions_bu = np.asarray(model.predict(arrays))
    alignment_bus = np.asarray(model.frame_alignment(arrays)).mean(axis=1)  # over heads
    paths = []
    for index, prediction in enumerate(predictions_bu):
        frames = int(batch["input_lengths"][index])
        eos = np.flatnonzero(prediction == EOS_ID)
        count = int(eos[0]) + 1 if len(eos) else len(prediction)
        truth = task.target_tokenizer.decode(batch["targets"][index])
        heard = task.target_tokenizer.decode(prediction)
        paths.append(
            plot_alignment(
                np.asarray(batch["inputs"][index][:frames]),
                alignment_bus[index, :count],
                task.target_tokenizer.token_strings(prediction[:count]),
                model.frame_stride,
                experiment.workdir / "plots" / f"alignment_example{index}{tag}.png",
                title=f"{task.name} example {index}: heard {heard!r}"
                + (f", said {truth!r}" if truth else ""),
            )
        )
    return paths
