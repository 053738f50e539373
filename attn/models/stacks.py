"""Transformer encoder and decoder stacks configured from a :class:`ModelConfig`."""

from __future__ import annotations

from typing import Any

from flax import nnx

import attn
from attn.models.config import ModelConfig
from attn.models.embedding import self_attention_scheme
from attn.nn import TransformerDecoder, TransformerEncoder

__all__ = ["build_decoder", "build_encoder", "self_attention_score"]


def _options(config: ModelConfig) -> dict[str, Any]:
    score, use_rope = self_attention_scheme(config.score, config.positional, config.num_heads)
    return dict(
        num_layers=config.num_layers,
        features=config.features,
        num_heads=config.num_heads,
        mlp_features=config.mlp_features or 4 * config.features,
        num_kv_heads=config.num_kv_heads,
        pre_norm=config.pre_norm,
        norm=config.norm,
        activation=config.activation,
        dropout_rate=config.dropout_rate,
        attention_dropout_rate=config.attention_dropout_rate,
        score=score,
        weighting=config.weighting,
        use_rope=use_rope,
        qk_norm=config.qk_norm,
        implementation=config.implementation,
        attention=config.attention_fn,
        dtype=config.compute_dtype,
    )


def build_encoder(config: ModelConfig, *, rngs: nnx.Rngs) -> TransformerEncoder:
    """Bidirectional stack ``[B, T, D] -> [B, T, D]``."""
    return TransformerEncoder(**_options(config), rngs=rngs)


def build_decoder(
    config: ModelConfig, *, cross_attention: bool, rngs: nnx.Rngs
) -> TransformerDecoder:
    """Causal stack, optionally attending to an encoder's output."""
    decoder = TransformerDecoder(**_options(config), cross_attention=cross_attention, rngs=rngs)
    if cross_attention:
        # TransformerBlock gives cross-attention the self-attention's score. Position schemes
        # apply within one sequence, so cross-attention gets the plain score (no ALiBi).
        plain_score = attn.catalog.get("score", config.score)
        for layer in decoder.layers:
            layer.cross_attention.score = plain_score
    return decoder


def self_attention_score(stack: TransformerEncoder | TransformerDecoder) -> Any:
    """The score function the stack's self-attention uses (one object shared by all layers)."""
    return stack.layers[0].self_attention.score
