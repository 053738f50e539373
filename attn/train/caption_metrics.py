"""Caption metrics computed on the host over an evaluation: corpus BLEU-4 and attention
localisation.

- ``bleu4``: sacrebleu's corpus BLEU (0-100, its default 13a tokenisation) of the greedy
  captions against the one reference caption of each image.
- ``localisation``: where the model looks when it names an object. For every colour or shape
  word the greedy caption gets right, with every word before it right too (so its attention
  is exactly the decoding step's), the share of the word's attention over the image regions
  that falls on regions showing the object the word names; averaged over those words.
  The model's attention is averaged over its heads (and layers) first;
  ``localisation_best_head`` is the same score for the single head that localises best, and
  ``localisation_chance`` for attention spread evenly over the regions (the share of regions
  the object touches): the level a model that does not look scores.

Localisation needs the data's ``object_of [B, U]`` and ``object_map [B, S, S]`` and a model
with ``word_alignment``, ``grid_shape`` and ``cell_size`` (the captioners of
:mod:`attn.models.captioners`); without them only BLEU is reported.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attn.data.tokenizers import Tokenizer

__all__ = ["CaptionScores", "object_regions"]


def object_regions(
    object_map_bhw: np.ndarray, grid_shape: tuple[int, int], cell_size: tuple[int, int]
) -> np.ndarray:
    """bool ``[B, P, K + 1]``: whether region ``p`` (row-major over ``grid_shape``, each
    ``cell_size`` pixels) shows any pixel of object ``k`` (``object_map`` value ``k``)."""
    B = object_map_bhw.shape[0]
    (gh, gw), (ch, cw) = grid_shape, cell_size
    cells = object_map_bhw[:, : gh * ch, : gw * cw].reshape(B, gh, ch, gw, cw)
    cells = cells.transpose(0, 1, 3, 2, 4).reshape(B, gh * gw, ch * cw)
    num_objects = int(object_map_bhw.max(initial=0))
    return np.stack([(cells == k).any(axis=-1) for k in range(num_objects + 1)], axis=-1)


class CaptionScores:
    """Accumulates BLEU's corpus and the localisation sums batch by batch; ``result()`` gives
    ``{"bleu4", "localisation", "localisation_best_head", "localisation_chance"}`` (the last
    three only when measured)."""

    def __init__(self, tokenizer: Tokenizer, model: Any):
        self.tokenizer, self.model = tokenizer, model
        self.hypotheses: list[str] = []
        self.references: list[str] = []
        self.mass, self.chance, self.words = 0.0, 0.0, 0
        self.head_mass: np.ndarray | None = None  # [K]: the mass of each head

    @property
    def localises(self) -> bool:
        return hasattr(self.model, "word_alignment")

    def update(self, batch: dict[str, np.ndarray], predictions_bu: np.ndarray) -> None:
        """One eval batch (padded examples have all weights 0) and its greedy captions."""
        real_b = np.asarray(batch["weights"]).reshape(len(predictions_bu), -1).any(axis=-1)
        targets_bu = np.asarray(batch["targets"])[real_b]
        for prediction, target in zip(predictions_bu[real_b], targets_bu, strict=True):
            self.hypotheses.append(self.tokenizer.decode(prediction))
            self.references.append(self.tokenizer.decode(target))
        if self.localises and "object_map" in batch:
            self._update_localisation(batch, predictions_bu, real_b)

    def _update_localisation(
        self, batch: dict[str, np.ndarray], predictions_bu: np.ndarray, real_b: np.ndarray
    ) -> None:
        alignment_bkup = np.asarray(self.model.word_alignment(batch), np.float64)
        alignment_bup = alignment_bkup.mean(axis=1)
        regions_bpk = object_regions(
            np.asarray(batch["object_map"]), self.model.grid_shape, self.model.cell_size
        )
        targets_bu = np.asarray(batch["targets"])
        # A word counts if it and every word before it are right: its attention is then the
        # attention of that step of greedy decoding.
        prefix_right_bu = np.cumprod(predictions_bu == targets_bu, axis=-1).astype(bool)
        object_bu = np.asarray(batch["object_of"])
        counted_bu = prefix_right_bu & (object_bu > 0) & real_b[:, None]
        for b, u in zip(*np.nonzero(counted_bu), strict=True):
            on_object_p = regions_bpk[b, :, object_bu[b, u]]
            self.mass += float(alignment_bup[b, u][on_object_p].sum())
            heads_k = alignment_bkup[b, :, u][:, on_object_p].sum(axis=-1)
            self.head_mass = heads_k if self.head_mass is None else self.head_mass + heads_k
            self.chance += float(on_object_p.mean())
            self.words += 1

    def result(self) -> dict[str, float]:
        import sacrebleu  # the extra "vision"

        scores = {"bleu4": float(sacrebleu.corpus_bleu(self.hypotheses, [self.references]).score)}
        if self.words:
            scores["localisation"] = self.mass / self.words
            scores["localisation_best_head"] = float(self.head_mass.max()) / self.words
            scores["localisation_chance"] = self.chance / self.words
        return scores
