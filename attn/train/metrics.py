"""Losses and metrics shared by every task kind (classify, tag, seq2seq, lm).

Targets are ``[B]`` or ``[B, L]`` int32 with float32 ``weights`` of the same shape (0 marks
padding or unscored positions). Sums are returned so batches and devices add up exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

# Error rates of speech recognition (attn.train.speech_metrics): lower is better.
ERROR_RATES = ("cer", "wer")
# What finalize() reports, the caption scores (attn.train.caption_metrics) and the error
# rates: the names train.best_metric may take.
METRICS = ("loss", "accuracy", "sequence_accuracy", "bleu4", "localisation", *ERROR_RATES)


def metric_sums(
    logits: jax.Array, predictions: jax.Array, targets: jax.Array, weights: jax.Array
) -> dict[str, jax.Array]:
    """Sums for loss, token accuracy and whole-sequence (exact-match) accuracy.

    ``predictions`` may differ from ``argmax(logits)`` (greedy decoding for seq2seq).
    """
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    correct = (predictions == targets) & (weights > 0)
    per_example_weight = weights.reshape(weights.shape[0], -1)
    scored = jnp.any(per_example_weight > 0, axis=-1)
    all_correct = jnp.all(
        correct.reshape(weights.shape[0], -1) | (per_example_weight == 0), axis=-1
    )
    return {
        "loss_sum": jnp.sum(losses * weights),
        "correct_sum": jnp.sum(correct * weights),
        "weight_sum": jnp.sum(weights),
        "sequences_correct": jnp.sum(all_correct & scored),
        "sequences": jnp.sum(scored),
    }


def finalize(sums: dict[str, float]) -> dict[str, float]:
    """Turn accumulated sums into loss, accuracy and sequence_accuracy."""
    weight = max(sums["weight_sum"], 1e-9)
    return {
        "loss": sums["loss_sum"] / weight,
        "accuracy": sums["correct_sum"] / weight,
        "sequence_accuracy": sums["sequences_correct"] / max(sums["sequences"], 1),
    }
