"""Linformer (Wang et al. 2020): attention over keys and values projected along the sequence.

``E [R, S]`` maps the S keys to R < S mixtures (``F`` the values; ``F = E`` shares it), so the
logits are ``[T, R]``: O(T * R) work and memory. Compose the projection with any attention:
``attn.attend(q, *linformer_project(k, v, e), ...)``. Projections mix positions, so causal and
padding masks over the original keys no longer apply (Linformer is bidirectional).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["linformer_project"]

Array = jax.Array


def linformer_project(k: Array, v: Array, e: Array, f: Array | None = None) -> tuple[Array, Array]:
    """Project keys ``[B, S, K, H]`` with ``e [R, S]`` and values ``[B, S, K, Hv]`` with ``f``
    (default ``e``); returns ``([B, R, K, H], [B, R, K, Hv])`` in the inputs' dtypes."""
    f = e if f is None else f
    S = k.shape[1]
    for name, matrix in (("e", e), ("f", f)):
        if matrix.ndim != 2 or matrix.shape[1] != S:
            raise ValueError(f"{name} must be [R, S] with S={S}, got {matrix.shape}")
    if e.shape != f.shape:
        raise ValueError(f"e {e.shape} and f {f.shape} must have the same shape")
    dtype = jnp.result_type(k.dtype, e.dtype, jnp.float32)
    k_proj = jnp.einsum("rs,bskh->brkh", e, k, preferred_element_type=dtype)
    v_proj = jnp.einsum("rs,bskh->brkh", f, v, preferred_element_type=dtype)
    return k_proj.astype(k.dtype), v_proj.astype(v.dtype)
