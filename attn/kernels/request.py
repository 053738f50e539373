"""One attention call's arguments, as every implementation of :func:`attn.attend` receives them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax

from attn import masks

__all__ = ["Request"]


@dataclasses.dataclass(frozen=True)
class Request:
    """Validated arguments of :func:`attn.attend` (score and weighting resolved to functions)."""

    q: jax.Array  # [B, T, N, H]
    k: jax.Array  # [B, S, K, H]
    v: jax.Array  # [B, S, K, Hv]
    score: Callable[..., jax.Array]
    weighting: Callable[..., jax.Array]
    mask: masks.Mask | None
    bias: Any  # None, an array broadcastable to [B, N, T, S], or a rule (b, h, q, kv) -> float
    dropout_rate: float
    rng: jax.Array | None
    return_weights: bool
    return_lse: bool

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(B, N, T, S)``."""
        B, T, N, _ = self.q.shape
        return B, N, T, self.k.shape[1]

    @property
    def bias_is_rule(self) -> bool:
        return self.bias is not None and callable(self.bias)
