"""Performer attention (Choromanski et al. 2021, FAVOR+): softmax attention approximated with
positive orthogonal random features.

``exp(q . k / sqrt(H)) = E_w[phi(q) . phi(k)]`` for ``phi(x) = exp(w . x' - |x'|^2 / 2) /
sqrt(M)`` with ``x' = x / H^(1/4)`` and ``w ~ N(0, I)``; drawing the ``M`` rows of ``w`` in
orthogonal blocks lowers the variance. The features then run through linear attention
(:func:`attn.variants.kernel_attention`), causal or not. Redraw features by passing a new
``rng`` to :func:`random_features` (e.g. every few hundred training steps).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from attn.variants.linear import kernel_attention

__all__ = ["performer_attention", "positive_features", "random_features"]

Array = jax.Array


def random_features(
    rng: Array, num_features: int, head_dim: int, *, orthogonal: bool = True
) -> Array:
    """A projection ``[num_features, head_dim]`` of Gaussian rows, orthogonal within each block
    of ``head_dim`` rows and rescaled to Gaussian norms (so every row is still N(0, I))."""
    if num_features < 1 or head_dim < 1:
        raise ValueError(f"need num_features, head_dim >= 1, got {num_features}, {head_dim}")
    num_blocks = -(-num_features // head_dim)
    block_rng, norm_rng = jax.random.split(rng)
    gaussian = jax.random.normal(block_rng, (num_blocks, head_dim, head_dim), jnp.float32)
    if not orthogonal:
        return gaussian.reshape(-1, head_dim)[:num_features]
    directions, _ = jnp.linalg.qr(gaussian)  # columns orthonormal, per block
    norms = jnp.linalg.norm(
        jax.random.normal(norm_rng, (num_blocks, head_dim, head_dim), jnp.float32), axis=-1
    )
    rows = jnp.swapaxes(directions, -1, -2) * norms[..., None]
    return rows.reshape(-1, head_dim)[:num_features]


def positive_features(x: Array, projection: Array, *, is_query: bool) -> Array:
    """FAVOR+ features ``[..., M]`` of ``x [B, L, heads, H]`` for the kernel
    ``exp(q . k / sqrt(H))``.

    A stabilising shift keeps the exponentials in range: per row for queries and one per head
    for keys. Both are constant over what the normalisation sums, so they cancel exactly.
    """
    head_dim, num_features = x.shape[-1], projection.shape[0]
    x = x.astype(jnp.result_type(x.dtype, jnp.float32)) * head_dim**-0.25
    logits = jnp.einsum("blnh,mh->blnm", x, projection.astype(x.dtype))
    logits = logits - 0.5 * jnp.sum(x * x, axis=-1, keepdims=True)
    axes = (-1,) if is_query else (1, -1)
    shift = jax.lax.stop_gradient(jnp.max(logits, axis=axes, keepdims=True))
    return jnp.exp(logits - shift) / math.sqrt(num_features)


def performer_attention(
    q: Array, k: Array, v: Array, projection: Array, *, causal: bool = False, chunk: int = 128
) -> Array:
    """Approximate ``softmax(q . k / sqrt(H)) v`` with FAVOR+ features from ``projection``
    (:func:`random_features`); shapes as :func:`attn.attend`. ``causal``: query i sees j <= i."""
    if projection.ndim != 2 or projection.shape[1] != q.shape[-1]:
        raise ValueError(
            f"projection must be [num_features, H={q.shape[-1]}], got {projection.shape}"
        )
    phi_q = positive_features(q, projection, is_query=True)
    phi_k = positive_features(k, projection, is_query=False)
    return kernel_attention(phi_q, phi_k, v, causal=causal, chunk=chunk)
