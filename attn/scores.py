"""Scoring functions ``(q, k, ...) -> logits``.

Shapes follow ``jax.nn.dot_product_attention``: q ``[B, T, N, H]``, k ``[B, S, K, Hk]`` with
``N % K == 0``; query head ``n`` reads key head ``n // (N // K)`` (grouped by reshaping q, never
by repeating k). Logits are ``[B, N, T, S]`` in at least float32.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["additive", "cosine", "dot", "general", "location_aware", "scaled_dot"]


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
    return _additive_scores("additive", q, k, w_q, w_k, v, None, max_chunk_elements)


def location_aware(
    q: jax.Array,
    k: jax.Array,
    *,
    w_q: jax.Array,
    w_k: jax.Array,
    v: jax.Array,
    previous_weights: jax.Array,
    filters: jax.Array,
    w_location: jax.Array,
    max_chunk_elements: int = 1 << 22,
) -> jax.Array:
    """Location-aware scores (Chorowski et al. 2015) ``v^T tanh(q W_q + k W_k + f W_loc)``.

    ``f = conv(previous_weights, filters)``: each query's previous alignment over the keys
    ``previous_weights [B, N, T, S]`` (the logits' shape) correlated along ``S`` with
    ``filters [W, F]`` (zero padding, output at the window's centre, ``W // 2`` keys to the
    left), giving ``F`` location features per key, projected by ``w_location [F, D]``. The
    other arguments are :func:`additive`'s; with ``w_location = 0`` this is :func:`additive`.
    """
    B, T, N, _, S, _ = check_qk(q, k, same_features=False)
    D = v.shape[-1] if v.ndim == 1 else -1
    if previous_weights.shape != (B, N, T, S):
        raise ValueError(
            f"location_aware: previous_weights must be [B, N, T, S] = {[B, N, T, S]}, got "
            f"{list(previous_weights.shape)}"
        )
    if filters.ndim != 2 or w_location.shape != (filters.shape[-1], D):
        raise ValueError(
            f"location_aware: need filters [W, F] and w_location [F, D] with D={D}; got "
            f"filters {filters.shape}, w_location {w_location.shape}"
        )
    location = (previous_weights, filters, w_location)
    return _additive_scores("location_aware", q, k, w_q, w_k, v, location, max_chunk_elements)


def _location_term(
    previous_bkgcs: jax.Array, filters_wf: jax.Array, w_location_fd: jax.Array
) -> jax.Array:
    """``conv(previous, filters) @ w_location``: ``[..., S] -> [..., S, D]``."""
    *lead, S = previous_bkgcs.shape
    # Convolution and projection are both linear: one convolution with D outputs is the same
    # map in one operation.
    kernel_w1d = (filters_wf @ w_location_fd)[:, None, :]
    width = kernel_w1d.shape[0]
    features_nsd = jax.lax.conv_general_dilated(
        previous_bkgcs.reshape(-1, S, 1),
        kernel_w1d,
        window_strides=(1,),
        padding=[(width // 2, (width - 1) // 2)],
        dimension_numbers=("NWC", "WIO", "NWC"),
        preferred_element_type=kernel_w1d.dtype,
    )
    return features_nsd.reshape(*lead, S, -1)


def _additive_scores(
    name: str,
    q: jax.Array,
    k: jax.Array,
    w_q: jax.Array,
    w_k: jax.Array,
    v: jax.Array,
    location: tuple[jax.Array, jax.Array, jax.Array] | None,
    max_chunk_elements: int,
) -> jax.Array:
    """``v^T tanh(q W_q + k W_k [+ location term])`` in query chunks (see :func:`additive`)."""
    B, T, N, H, S, K = check_qk(q, k, same_features=False)
    D = v.shape[-1] if v.ndim == 1 else None
    if D is None or w_q.shape != (H, D) or w_k.shape != (k.shape[-1], D):
        raise ValueError(
            f"{name}: need w_q [H, D], w_k [Hk, D], v [D] with H={H}, Hk={k.shape[-1]}; "
            f"got w_q {w_q.shape}, w_k {w_k.shape}, v {v.shape}"
        )
    arrays = (q, k, w_q, w_k, v) + (location or ())
    dtype = accumulation_dtype(*arrays)
    q_proj = jnp.einsum("btnh,hd->bntd", q, w_q, preferred_element_type=dtype)
    k_proj = jnp.einsum("bskh,hd->bksd", k, w_k, preferred_element_type=dtype)
    q_proj = q_proj.reshape(B, K, N // K, T, D)
    v = v.astype(dtype)

    chunk = max(1, min(T, max_chunk_elements // max(1, B * N * S * D)))
    num_chunks = -(-T // chunk)

    def chunked(x_bkgt_: jax.Array) -> jax.Array:
        """``[B, K, G, T, ...] -> [num_chunks, B, K, G, chunk, ...]``."""
        padding = [(0, 0)] * 3 + [(0, num_chunks * chunk - T)] + [(0, 0)] * (x_bkgt_.ndim - 4)
        x = jnp.pad(x_bkgt_, padding)
        return jnp.moveaxis(x.reshape(B, K, N // K, num_chunks, chunk, *x.shape[4:]), 3, 0)

    if location is None:
        previous_chunks = None
        filters, w_location = None, None
    else:
        previous, filters, w_location = location
        previous_chunks = chunked(previous.astype(dtype).reshape(B, K, N // K, T, S))
        filters, w_location = filters.astype(dtype), w_location.astype(dtype)

    @jax.checkpoint  # keeps backward memory at one chunk's hidden tensor too
    def score_chunk(chunks: tuple[jax.Array, jax.Array | None]) -> jax.Array:
        q_chunk, previous_chunk = chunks
        hidden = q_chunk[:, :, :, :, None, :] + k_proj[:, :, None, None, :, :]
        if previous_chunk is not None:
            hidden = hidden + _location_term(previous_chunk, filters, w_location)
        return jnp.tanh(hidden) @ v  # [B, K, G, chunk, S]

    logits = jax.lax.map(score_chunk, (chunked(q_proj), previous_chunks))
    logits = jnp.moveaxis(logits, 0, 3).reshape(B, N, num_chunks * chunk, S)
    return logits[:, :, :T]
