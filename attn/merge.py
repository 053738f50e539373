"""Exact merging of softmax attention computed over disjoint sets of keys.

With ``(out_a, lse_a)`` from keys A and ``(out_b, lse_b)`` from keys B (``attend(...,
return_lse=True)``), the attention over A and B together is the lse-weighted average:
``lse = log(exp(lse_a) + exp(lse_b))``, ``out = exp(lse_a - lse) out_a + exp(lse_b - lse) out_b``.
This is how chunked prefill, KV caches split in blocks and sequence-parallel ring attention
combine partial results. A softmax sink must enter exactly one of the parts.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["merge"]


def merge(
    out_a: jax.Array, lse_a: jax.Array, out_b: jax.Array, lse_b: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Merge two partial attention results over disjoint key sets.

    Args:
      out_a, out_b: ``[B, T, N, Hv]`` outputs of the two parts (0 where a row saw no key).
      lse_a, lse_b: ``[B, N, T]`` their log-sum-exp rows (``-inf`` where a row saw no key).

    Returns:
      ``(out [B, T, N, Hv], lse [B, N, T])``, as if attention had run over both key sets; a row
      that saw no key in either part stays 0 with lse ``-inf``. Differentiable.
    """
    if out_a.shape != out_b.shape or lse_a.shape != lse_b.shape:
        raise ValueError(
            f"merge: parts differ in shape: out {out_a.shape} vs {out_b.shape}, "
            f"lse {lse_a.shape} vs {lse_b.shape}"
        )
    B, T, N, _ = out_a.shape
    if lse_a.shape != (B, N, T):
        raise ValueError(f"merge: lse must be [B, N, T] = {(B, N, T)}, got {lse_a.shape}")
    # Any finite shift gives the same result, so it carries no gradient; rows empty in both
    # parts shift by 0 so that exp(-inf - 0) = 0 rather than NaN.
    top = jnp.maximum(lse_a, lse_b)
    shift = jax.lax.stop_gradient(jnp.where(top == -jnp.inf, 0.0, top))
    weight_a, weight_b = jnp.exp(lse_a - shift), jnp.exp(lse_b - shift)
    total = weight_a + weight_b
    nonempty = total > 0
    safe_total = jnp.where(nonempty, total, 1.0)
    lse = jnp.where(nonempty, shift + jnp.log(safe_total), -jnp.inf)

    def rows(weight: jax.Array) -> jax.Array:  # [B, N, T] -> [B, T, N, 1]
        return (weight / safe_total).transpose(0, 2, 1)[..., None]

    dtype = jnp.result_type(out_a.dtype, jnp.float32)
    out = rows(weight_a) * out_a.astype(dtype) + rows(weight_b) * out_b.astype(dtype)
    return out.astype(out_a.dtype), lse
