"""One attention call's arguments, as every implementation of :func:`attn.attend` receives them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from attn import masks

__all__ = ["Request", "concrete"]


def concrete(x: Any) -> np.ndarray | None:
    """``x`` as a NumPy array, or ``None`` when it is traced (a check must then wait)."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


@dataclasses.dataclass(frozen=True)
class Request:
    """Validated arguments of :func:`attn.attend` (score and weighting resolved to functions,
    q, k and v with one batch axis)."""

    q: jax.Array  # [B, T, N, H]
    k: jax.Array  # [B, S, K, H]
    v: jax.Array  # [B, S, K, Hv]
    score: Callable[..., jax.Array]
    weighting: Callable[..., jax.Array]
    mask: masks.Mask | None
    bias: Any  # None, an array broadcastable to [B, N, T, S], or a rule (b, h, q, kv) -> float
    dropout_rate: Any  # a number in [0, 1) or a scalar array (maybe traced)
    rng: jax.Array | None
    return_weights: bool
    return_lse: bool
    logits_soft_cap: Any = None  # None or a positive scalar: logits -> cap * tanh(logits / cap)
    precision: Any = None  # of the q . k and weights . v matmuls
    logits_dtype: Any = jnp.float32  # float32 or float64: what the logits accumulate in
    broadcast_dropout: bool = False  # one dropout mask [T, S] for every example and head

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(B, N, T, S)``."""
        B, T, N, _ = self.q.shape
        return B, N, T, self.k.shape[1]

    @property
    def bias_is_rule(self) -> bool:
        return self.bias is not None and callable(self.bias)

    @property
    def dropout_active(self) -> bool:
        """Whether dropout may drop anything: a traced rate might, so it counts as active."""
        rate = concrete(self.dropout_rate)
        return rate is None or bool(rate > 0)
