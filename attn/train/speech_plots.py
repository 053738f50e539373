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

from attn.train.plots import layer_number, save_figure, tokens_through_eos

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
    ``attention_frames_example{i}{tag}.png``: for a recogniser each decoded character's attention
    over time, for a keyword classifier each last-layer head's attention received by each
    time step (averaged over the real steps that attend); returns the paths."""
    task = experiment.task
    model = experiment.model(experiment.host_params())
    arrays = {name: jnp.asarray(value) for name, value in batch.items()}
    if task.kind == "seq2seq":
        # Greedy decoding's characters, whose attention frame_alignment gives (predict may
        # be a beam search).
        predictions_bu = np.asarray(model.greedy_decode(arrays)[0])
        rows_bks = np.asarray(model.frame_alignment(arrays)).mean(axis=1)  # over heads
        counts = [tokens_through_eos(prediction) for prediction in predictions_bu]
        labels = [
            task.target_tokenizer.token_strings(p[:n])
            for p, n in zip(predictions_bu, counts, strict=True)
        ]
    else:
        predictions_bu = np.asarray(model.predict(arrays))
        maps = model.attention_maps(arrays)
        last = np.asarray(maps[max(maps, key=layer_number)])
        rows_bks = _received(last, np.asarray(batch["input_lengths"]), model.frame_stride)
        labels = [[f"head {n}" for n in range(last.shape[1])]] * len(predictions_bu)
    paths = []
    for index, rows_ks in enumerate(rows_bks):
        frames = int(batch["input_lengths"][index])
        said = task.target_tokenizer.decode(np.ravel(batch["targets"][index]))
        heard = task.target_tokenizer.decode(np.ravel(predictions_bu[index]))
        paths.append(
            plot_alignment(
                np.asarray(batch["inputs"][index][:frames]),
                rows_ks[: len(labels[index])],
                labels[index],
                model.frame_stride,
                experiment.workdir / "plots" / f"attention_frames_example{index}{tag}.png",
                title=f"{task.name} example {index}: heard {heard!r}"
                + (f", said {said!r}" if said else ""),
            )
        )
    return paths


def _received(weights_bnss: np.ndarray, lengths_b: np.ndarray, frame_stride: int) -> np.ndarray:
    """``[B, N, S]``: per head, the attention each step receives, averaged over the real
    query steps (``ceil(length / frame_stride)`` of them)."""
    steps_b = -(-lengths_b // frame_stride)
    real_bs = np.arange(weights_bnss.shape[-1]) < steps_b[:, None]
    summed_bns = (weights_bnss * real_bs[:, None, :, None]).sum(axis=2)
    return summed_bns / np.maximum(steps_b, 1)[:, None, None]
