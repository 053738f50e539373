"""Token embeddings with absolute positions, and the in-attention position schemes.

``positional`` names one of five schemes. "sinusoidal" and "learned" are added to the token
embeddings here; "rope" rotates queries and keys inside every self-attention; "alibi" adds a
distance bias to every self-attention's logits (through the score function, see
:class:`AlibiScore`); "none" gives no position information (a bag of tokens for encoders).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

import attn

__all__ = ["AlibiScore", "Embedder", "decoding_offset", "self_attention_scheme"]

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
        dropout_rate: float = 0.0,
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
        self.dropout = nnx.Dropout(dropout_rate, rngs=rngs if dropout_rate > 0 else None)

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


class AlibiScore:
    """``score(q, k)`` plus the ALiBi bias ``-slope_h * |(q_offset + i) - j|`` (Press et al.).

    :class:`attn.nn.TransformerBlock` passes no ``bias`` to its attention, so ALiBi rides on the
    score function. ``q_offset`` is the position of query 0: 0 for a full sequence, and while
    decoding with a KV cache the caller sets it with :meth:`at_offset` (the score sees only
    ``q [B, T_new, N, H]`` and the cache slots ``k [B, L, K, H]``).
    """

    def __init__(self, score: Callable[..., Array], num_heads: int):
        self.score = score
        self.num_heads = num_heads
        self.q_offset: Array | int = 0

    # Equal by configuration, not identity, so that identical models share compiled functions
    # (nnx.jit caches on the module's static structure, which holds this object).
    def __eq__(self, other: object) -> bool:
        return isinstance(other, AlibiScore) and (self.score, self.num_heads) == (
            other.score,
            other.num_heads,
        )

    def __hash__(self) -> int:
        return hash((AlibiScore, self.score, self.num_heads))

    def __call__(self, q: Array, k: Array, **kwargs: Any) -> Array:
        bias = attn.positional.alibi_bias(
            self.num_heads, q.shape[1], k.shape[1], q_offset=self.q_offset
        )
        return self.score(q, k, **kwargs) + bias

    @contextlib.contextmanager
    def at_offset(self, q_offset: Array | int) -> Iterator[None]:
        """Within the block, query 0 sits at position ``q_offset`` (a scalar, may be traced)."""
        self.q_offset = q_offset
        try:
            yield
        finally:
            self.q_offset = 0


def self_attention_scheme(
    score: str, positional: str, num_heads: int
) -> tuple[Callable[..., Array], bool]:
    """The self-attention ``(score function, use_rope)`` for a config's score and positional."""
    score_fn = attn.catalog.get("score", score)
    if positional == "alibi":
        return AlibiScore(score_fn, num_heads), False
    return score_fn, positional == "rope"


@contextlib.contextmanager
def decoding_offset(score: Any, q_offset: Array | int) -> Iterator[None]:
    """:meth:`AlibiScore.at_offset` for an ALiBi score; nothing for other scores."""
    if isinstance(score, AlibiScore):
        with score.at_offset(q_offset):
            yield
    else:
        yield
