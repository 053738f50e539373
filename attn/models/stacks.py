"""The options every Transformer model shares, and its encoder and decoder stacks.

:class:`TransformerOptions` is the ``model`` config section of the Transformer models: its
fields are the keyword arguments of :class:`attn.nn.TransformerEncoder` and
:class:`attn.nn.TransformerDecoder`, and its ``attention`` section (:class:`AttentionOptions`)
holds keyword arguments of :class:`attn.nn.MultiHeadAttention`, so every option reaches the
module that uses it under the name the config gives it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
from flax import nnx

from attn.kernels.dispatch import NAMES as IMPLEMENTATIONS
from attn.models.options import option
from attn.nn import POSITIONALS, TransformerDecoder, TransformerEncoder
from attn.nn.transformer import ACTIVATIONS, NORMS

__all__ = [
    "DTYPES",
    "AttentionOptions",
    "TransformerOptions",
    "build_decoder",
    "build_encoder",
    "stack_arguments",
]

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class AttentionOptions:
    """``model.attention``: keyword arguments of :class:`attn.nn.MultiHeadAttention`.

    ``mask`` (a catalog mask spec) applies to every self-attention, ``&`` the padding mask;
    ``positional`` is the model's position scheme (``"sinusoidal"`` and ``"learned"`` are added
    to the token embeddings, ``"rope"``, ``"alibi"`` and ``"t5"`` act inside self-attention);
    ``dropout_rate`` drops attention weights; ``variant`` (a catalog ``"attention"`` spec such
    as ``"linear"`` or ``"performer(num_features=128)"``) replaces ``attn.attend``.
    """

    score: str = option("scaled_dot", catalog_kind="score")
    weighting: str = option("softmax", catalog_kind="weighting")
    mask: str | None = option(None, catalog_kind="mask")
    implementation: str = option("auto", choices=IMPLEMENTATIONS)
    positional: str = option("sinusoidal", choices=POSITIONALS)
    qk_norm: bool = False
    dropout_rate: float = option(0.0, minimum=0.0, below=1.0)
    variant: str | None = option(None, catalog_kind="attention")


@dataclasses.dataclass(frozen=True)
class TransformerOptions:
    """``model``: a Transformer model's options (the stack's keyword arguments)."""

    name: str
    num_layers: int = option(2, minimum=1)
    features: int = option(64, minimum=1)
    num_heads: int = option(4, minimum=1)
    num_kv_heads: int | None = option(None, minimum=1)  # None: num_heads
    mlp_features: int | None = option(None, minimum=1)  # None: 4 * features
    pre_norm: bool = True
    norm: str = option("layer_norm", choices=tuple(NORMS))
    activation: str = option("gelu", choices=tuple(ACTIVATIONS))
    dropout_rate: float = option(0.0, minimum=0.0, below=1.0)  # residual and MLP dropout
    dtype: str = option("float32", choices=tuple(DTYPES))  # compute dtype; parameters float32
    attention: AttentionOptions = option(AttentionOptions())


def stack_arguments(options: TransformerOptions) -> dict[str, Any]:
    """The stack's keyword arguments: the :class:`TransformerOptions` fields, with the
    derived defaults filled in and the attention section as a dict."""
    arguments = {
        field.name: getattr(options, field.name)
        for field in dataclasses.fields(TransformerOptions)
        if field.name != "name"
    }
    arguments.update(
        mlp_features=options.mlp_features or 4 * options.features,
        dtype=DTYPES[options.dtype],
        attention=dataclasses.asdict(options.attention),
    )
    return arguments


def build_encoder(options: TransformerOptions, *, rngs: nnx.Rngs) -> TransformerEncoder:
    """Bidirectional stack ``[B, T, D] -> [B, T, D]``."""
    return TransformerEncoder(**stack_arguments(options), rngs=rngs)


def build_decoder(
    options: TransformerOptions, *, cross_attention: bool, rngs: nnx.Rngs
) -> TransformerDecoder:
    """Causal stack, optionally attending to an encoder's output."""
    return TransformerDecoder(
        **stack_arguments(options), cross_attention=cross_attention, rngs=rngs
    )
