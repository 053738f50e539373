"""Token embeddings with absolute positions.

``positional`` names the model's position scheme (:data:`attn.nn.POSITIONALS`).
"sinusoidal" and "learned" are added to the token embeddings here; "rope", "alibi" and "t5"
act inside every self-attention (:class:`attn.nn.MultiHeadAttention`) and add nothing here;
"none" gives no position information (a bag of tokens for encoders).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

import attn
from attn.nn.dropout import Dropout, maybe_active

__all__ = ["Embedder"]

Array = jax.Array


class Embedder(nnx.Module):
    """``tokens [B, T] -> [B, T, features]``: a token table plus absolute positions, then dropout.

    ``max_length`` bounds the positions only for ``positional="learned"`` (its table size).
    Both tables start at unit scale (std 1), the scale of the sinusoidal encodings.
    """

    def __init__(
        self,
        vocab_size: int,
        features: int,
        *,
        positional: str,
        max_length: int,
        dropout_rate: float | Array = 0.0,
        dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        init = nnx.initializers.normal(stddev=1.0)
        self.features = features
        self.positional = positional
        self.max_length = max_length
        self.dtype = dtype
        self.tokens = nnx.Embed(vocab_size, features, embedding_init=init, dtype=dtype, rngs=rngs)
        if positional == "learned":
            self.positions = nnx.Embed(
                max_length, features, embedding_init=init, dtype=dtype, rngs=rngs
            )
        else:
            self.positions = nnx.data(None)
        self.dropout = Dropout(dropout_rate, rngs=rngs if maybe_active(dropout_rate) else None)

    def check_length(self, length: int) -> None:
        """Raise ``ValueError`` if a learned table has no row for position ``length - 1``."""
        if self.positional == "learned" and length > self.max_length:
            raise ValueError(
                f"sequence of length {length} exceeds the learned position table "
                f"(max_length={self.max_length}); use another positional scheme or a longer task"
            )

    def __call__(
        self, tokens_bt: Array, *, start: Array | int = 0, deterministic: bool | None = None
    ) -> Array:
        """Embed ``tokens [B, T]`` sitting at positions ``start, ..., start + T - 1``."""
        T = tokens_bt.shape[1]
        self.check_length(T)
        x_btd = self.tokens(tokens_bt)
        positions_t = start + jnp.arange(T)
        if self.positional == "sinusoidal":
            x_btd = x_btd + attn.positional.sinusoidal(positions_t, self.features)
        elif self.positional == "learned":
            x_btd = x_btd + self.positions(positions_t)
        # Adding float32 encodings promotes; keep the compute dtype.
        x_btd = x_btd.astype(self.dtype or x_btd.dtype)
        return self.dropout(x_btd, deterministic=deterministic)
