"""Scoring functions ``(q, k, ...) -> logits``.

Shapes follow ``jax.nn.dot_product_attention``: q ``[B, T, N, H]``, k ``[B, S, K, Hk]`` with
``N % K == 0``; query head ``n`` reads key head ``n // (N // K)`` (grouped by reshaping q, never
by repeating k). Logits are ``[B, N, T, S]`` in at least float32.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["additive", "cosine", "dot", "general", "scaled_dot"]


def accumulation_dtype(*arrays: jax.Array) -> jnp.dtype:
    """At least float32: low-precision inputs accumulate in float32, float64 stays float64."""
    return jnp.result_type(*(a.dtype for a in arrays), jnp.float32)


def check_qk(q: jax.Array, k: jax.Array, *, same_features: bool = True) -> tuple[int, ...]:
    """Validate q ``[B, T, N, H]`` and k ``[B, S, K, Hk]``; return ``(B, T, N, H, S, K)``."""
    for name, x in (("q", q), ("k", k)):
        if not hasattr(x, "ndim") or x.ndim != 4:
            shape = getattr(x, "shape", type(x).__name__)
            raise ValueError(f"{name} must have rank 4 ([B, T|S, heads, features]), got {shape}")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"{name} must be a float array, got dtype {x.dtype}")
    B, T, N, H = q.shape
    Bk, S, K, Hk = k.shape
    if Bk != B:
        raise ValueError(f"q and k differ in batch size: q {q.shape}, k {k.shape}")
    if min(N, K, H, Hk) < 1:
        raise ValueError(
            f"q and k need at least one head and one feature (N, K, H >= 1): q {q.shape}, "
            f"k {k.shape}"
        )
    if N % K:
        raise ValueError(
            f"query heads N={N} must be a multiple of key heads K={K}: q {q.shape}, k {k.shape}"
        )
    if same_features and Hk != H:
        raise ValueError(f"q and k differ in head features: q {q.shape}, k {k.shape}")
    return B, T, N, H, S, K


def _grouped(q: jax.Array, num_kv_heads: int) -> jax.Array:
    """``[B, T, N, H] -> [B, T, K, G, H]`` with ``N = K * G``."""
    B, T, N, H = q.shape
    return q.reshape(B, T, num_kv_heads, N // num_kv_heads, H)


def dot(q: jax.Array, k: jax.Array) -> jax.Array:
    """Dot-product scores ``q . k`` (Luong "dot"): ``[B, N, T, S]``."""
    B, T, N, _, S, K = check_qk(q, k)
    logits = jnp.einsum(
        "btkgh,bskh->bkgts",
        _grouped(q, K),
        k,
        preferred_element_type=accumulation_dtype(q, k),
    )
    return logits.reshape(B, N, T, S)


def scaled_dot(q: jax.Array, k: jax.Array, *, scale: float | None = None) -> jax.Array:
    """``scale * q . k`` with ``scale = 1 / sqrt(H)`` by default (Vaswani et al. 2017)."""
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    return dot(q, k) * scale


def general(q: jax.Array, k: jax.Array, *, weight: jax.Array) -> jax.Array:
    """Luong "general" (bilinear) scores ``q W k^T``.

    ``weight`` is ``[H, Hk]`` (shared by all heads) or ``[N, H, Hk]`` (one per query head).
    """
    _, _, N, H, _, _ = check_qk(q, k, same_features=False)
    Hk = k.shape[-1]
    if weight.shape not in ((H, Hk), (N, H, Hk)):
        raise ValueError(
            f"general: weight must be [H, Hk] = {(H, Hk)} or [N, H, Hk] = {(N, H, Hk)}, "
            f"got {weight.shape}"
        )
    spec = "btnh,hd->btnd" if weight.ndim == 2 else "btnh,nhd->btnd"
    projected = jnp.einsum(spec, q, weight, preferred_element_type=accumulation_dtype(q, weight))
    return dot(projected, k.astype(projected.dtype))


def cosine(q: jax.Array, k: jax.Array, *, temperature: float = 0.1) -> jax.Array:
    """Cosine similarity of q and k divided by ``temperature`` (Swin-v2 style, or qk-norm with a
    fixed scale). Zero vectors score 0."""
    if not temperature > 0:
        raise ValueError(f"cosine: temperature must be > 0, got {temperature}")
    dtype = accumulation_dtype(q, k)

    def unit(x: jax.Array) -> jax.Array:
        x = x.astype(dtype)
        squared = jnp.sum(x * x, axis=-1, keepdims=True)
        # Both wheres: a floor on the norm alone gives a zero vector the gradient 0 * inf = NaN.
        nonzero = squared > 0
        return x * jnp.where(nonzero, jax.lax.rsqrt(jnp.where(nonzero, squared, 1.0)), 0.0)

    return dot(unit(q), unit(k)) / temperature


def additive(
    q: jax.Array,
    k: jax.Array,
    *,
    w_q: jax.Array,
    w_k: jax.Array,
    v: jax.Array,
    max_chunk_elements: int = 1 << 22,
) -> jax.Array:
    """Bahdanau (additive) scores ``v^T tanh(q W_q + k W_k)``.

    ``w_q`` is ``[H, D]``, ``w_k`` ``[Hk, D]``, ``v`` ``[D]``. The ``[B, N, T, S, D]`` hidden
    tensor is never built whole: queries are processed in chunks of at most
    ``max_chunk_elements`` hidden entries, and each chunk is recomputed in the backward pass.
    """
    B, T, N, H, S, K = check_qk(q, k, same_features=False)
    D = v.shape[-1] if v.ndim == 1 else None
    if D is None or w_q.shape != (H, D) or w_k.shape != (k.shape[-1], D):
        raise ValueError(
            f"additive: need w_q [H, D], w_k [Hk, D], v [D] with H={H}, Hk={k.shape[-1]}; "
            f"got w_q {w_q.shape}, w_k {w_k.shape}, v {v.shape}"
        )
    dtype = accumulation_dtype(q, k, w_q, w_k, v)
    q_proj = jnp.einsum("btnh,hd->bntd", q, w_q, preferred_element_type=dtype)
    k_proj = jnp.einsum("bskh,hd->bksd", k, w_k, preferred_element_type=dtype)
    q_proj = q_proj.reshape(B, K, N // K, T, D)
    v = v.astype(dtype)

    chunk = max(1, min(T, max_chunk_elements // max(1, B * N * S * D)))
    num_chunks = -(-T // chunk)
    q_chunks = jnp.pad(q_proj, ((0, 0), (0, 0), (0, 0), (0, num_chunks * chunk - T), (0, 0)))
    q_chunks = jnp.moveaxis(q_chunks.reshape(B, K, N // K, num_chunks, chunk, D), 3, 0)

    @jax.checkpoint  # keeps backward memory at one chunk's hidden tensor too
    def score_chunk(q_chunk: jax.Array) -> jax.Array:
        hidden = jnp.tanh(q_chunk[:, :, :, :, None, :] + k_proj[:, :, None, None, :, :])
        return hidden @ v  # [B, K, G, chunk, S]

    logits = jax.lax.map(score_chunk, q_chunks)  # [num_chunks, B, K, G, chunk, S]
    logits = jnp.moveaxis(logits, 0, 3).reshape(B, N, num_chunks * chunk, S)
    return logits[:, :, :T]
