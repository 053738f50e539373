"""Transcription metrics computed on the host over an evaluation: character and word error
rates of the decoded transcripts, and how monotonic the decoder's attention is.

- ``cer``, ``wer``: jiwer's corpus error rates (edits / reference length, pooled over the
  split: substitutions + deletions + insertions over reference characters or words).
- ``alignment_monotonic``: for every transcript the model gets right up to a character, the
  share of consecutive characters whose attention peak (the encoder step with the most weight,
  heads averaged) does not move back in time. A speller that reads the audio left to right
  scores 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attn.data.tokenizers import Tokenizer

__all__ = ["TranscriptScores", "error_rates", "monotonic_steps"]


def error_rates(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """``{"cer", "wer"}`` of ``hypotheses`` against ``references`` (non-empty strings), pooled
    over the corpus as fractions (0.05 = 5%)."""
    import jiwer  # the extra "speech"

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references or not all(reference.strip() for reference in references):
        raise ValueError("error rates need non-empty reference transcripts")
    return {
        "cer": float(jiwer.cer(references, hypotheses)),
        "wer": float(jiwer.wer(references, hypotheses)),
    }


def monotonic_steps(alignment_us: np.ndarray) -> tuple[int, int]:
    """``(forward, total)``: of the ``U - 1`` consecutive pairs of rows of ``alignment [U, S]``,
    how many have their peak at the same or a later step ``s``."""
    peaks_u = np.argmax(np.asarray(alignment_us), axis=-1)
    return int(np.sum(np.diff(peaks_u) >= 0)), max(len(peaks_u) - 1, 0)


class TranscriptScores:
    """Accumulates transcripts (and, for models with ``frame_alignment``, the monotonicity
    counts) batch by batch; ``result()`` gives ``{"cer", "wer", "alignment_monotonic"}``."""

    def __init__(self, tokenizer: Tokenizer, model: Any):
        self.tokenizer, self.model = tokenizer, model
        self.references: list[str] = []
        self.hypotheses: list[str] = []
        self.forward, self.pairs = 0, 0

    def update(self, batch: dict[str, np.ndarray], predictions_bu: np.ndarray) -> None:
        """One eval batch (padded examples have all weights 0) and its decoded transcripts."""
        predictions_bu = np.asarray(predictions_bu)
        real_b = np.asarray(batch["weights"]).reshape(len(predictions_bu), -1).any(axis=-1)
        targets_bu = np.asarray(batch["targets"])
        for prediction, target in zip(predictions_bu[real_b], targets_bu[real_b], strict=True):
            self.hypotheses.append(self.tokenizer.decode(prediction))
            self.references.append(self.tokenizer.decode(target))
        if hasattr(self.model, "frame_alignment"):
            alignment_bus = np.asarray(self.model.frame_alignment(batch)).mean(axis=1)
            # The alignment is greedy decoding's: with a beam search predicting, its prefix is
            # counted on greedy's own characters.
            if getattr(self.model, "beam_size", 1) > 1:
                predictions_bu = np.asarray(self.model.greedy_decode(batch)[0])
            # Only the steps greedy decoding took with every earlier character right: their
            # attention is the decoding step's, and a wrong turn's attention is not the model's
            # reading of the audio.
            right_bu = np.cumprod(predictions_bu == targets_bu, axis=-1).astype(bool)
            for b in np.flatnonzero(real_b):
                length = int(right_bu[b].sum())
                forward, pairs = monotonic_steps(alignment_bus[b, :length])
                self.forward, self.pairs = self.forward + forward, self.pairs + pairs

    def result(self) -> dict[str, float]:
        scores = error_rates(self.references, self.hypotheses)
        if self.pairs:
            scores["alignment_monotonic"] = self.forward / self.pairs
        return scores
