"""Linear attention (Katharopoulos et al. 2020): ``phi(q) (phi(k)^T v) / phi(q) (phi(k)^T 1)``.

With a non-negative feature map ``phi`` the kernel ``phi(q) . phi(k)`` replaces
``exp(q . k)``, and associativity turns O(T * S) work into O((T + S) * F * Hv). The causal form
runs over chunks of positions: exact (masked) attention inside a chunk, a running sum of
``phi(k) v^T`` across chunks (the prefix-sum form without materialising one state per position).
Shapes follow :func:`attn.attend` (q ``[B, T, N, H]``, k ``[B, S, K, H]``, v ``[B, S, K, Hv]``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["FEATURE_MAPS", "feature_function", "kernel_attention", "linear_attention"]

Array = jax.Array

FEATURE_MAPS: dict[str, Callable[[Array], Array]] = {
    "elu": lambda x: jax.nn.elu(x) + 1.0,  # the paper's elu(x) + 1 > 0
    "relu": jax.nn.relu,
}


def _check(q: Array, k: Array, v: Array, causal: bool) -> tuple[int, int, int, int, int]:
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"need rank-4 q, k, v; got {q.shape}, {k.shape}, {v.shape}")
    B, T, N, _ = q.shape
    _, S, K, _ = k.shape
    if k.shape[0] != B or v.shape[:3] != k.shape[:3] or N % K:
        raise ValueError(
            f"need q [B, T, N, F], k [B, S, K, F], v [B, S, K, Hv] with N % K == 0; "
            f"got q {q.shape}, k {k.shape}, v {v.shape}"
        )
    if causal and T != S:
        raise ValueError(f"causal linear attention needs T == S, got T={T}, S={S}")
    return B, T, N, S, K


def _ratio(numerator: Array, denominator: Array) -> Array:
    """``numerator / denominator`` with 0 where no key carries weight (a zero feature row)."""
    positive = denominator > 0
    return numerator / jnp.where(positive, denominator, 1.0)[..., None]


def kernel_attention(
    phi_q: Array, phi_k: Array, v: Array, *, causal: bool = False, chunk: int = 128
) -> Array:
    """Attention with weights ``phi_q . phi_k`` normalised per query, from non-negative
    features ``phi_q [B, T, N, F]``, ``phi_k [B, S, K, F]``; output ``[B, T, N, Hv]`` in v's
    dtype. ``causal``: query i uses keys j <= i, computed in chunks of ``chunk`` positions."""
    B, T, N, _, K = _check(phi_q, phi_k, v, causal)
    G = N // K
    dtype = jnp.result_type(phi_q.dtype, phi_k.dtype, v.dtype, jnp.float32)
    phi_q = phi_q.astype(dtype).reshape(B, T, K, G, -1)
    phi_k, values = phi_k.astype(dtype), v.astype(dtype)
    if not causal:
        state = jnp.einsum("bskf,bskh->bkfh", phi_k, values)
        total = phi_k.sum(axis=1)
        out = _ratio(
            jnp.einsum("btkgf,bkfh->btkgh", phi_q, state),
            jnp.einsum("btkgf,bkf->btkg", phi_q, total),
        )
    else:
        out = _causal_chunks(phi_q, phi_k, values, min(chunk, T))
    return out.reshape(B, T, N, v.shape[-1]).astype(v.dtype)


def _causal_chunks(phi_q: Array, phi_k: Array, v: Array, chunk: int) -> Array:
    """Causal ``kernel_attention`` on grouped features ``phi_q [B, T, K, G, F]``."""
    B, T, K, G, F = phi_q.shape
    n = -(-T // chunk)
    pad = n * chunk - T

    def chunks(x: Array) -> Array:  # [B, T, ...] -> [n, B, chunk, ...]; padded keys weigh 0
        x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
        return jnp.moveaxis(x.reshape(B, n, chunk, *x.shape[2:]), 1, 0)

    below = jnp.tril(jnp.ones((chunk, chunk), dtype=bool))

    @jax.checkpoint  # keep only the running state per chunk for the backward pass
    def step(carry: tuple[Array, Array], xs: tuple[Array, Array, Array]) -> tuple:
        state, total = carry  # [B, K, F, Hv], [B, K, F]: sums over all earlier chunks
        q_c, k_c, v_c = xs
        inside = jnp.where(below, jnp.einsum("bckgf,bdkf->bkgcd", q_c, k_c), 0.0)
        numerator = jnp.einsum("bckgf,bkfh->bckgh", q_c, state) + jnp.einsum(
            "bkgcd,bdkh->bckgh", inside, v_c
        )
        denominator = jnp.einsum("bckgf,bkf->bckg", q_c, total) + jnp.moveaxis(
            inside.sum(axis=-1), -1, 1
        )
        state = state + jnp.einsum("bdkf,bdkh->bkfh", k_c, v_c)
        total = total + k_c.sum(axis=1)
        return (state, total), _ratio(numerator, denominator)

    init = (
        jnp.zeros((B, K, F, v.shape[-1]), phi_q.dtype),
        jnp.zeros((B, K, F), phi_q.dtype),
    )
    _, out = jax.lax.scan(step, init, (chunks(phi_q), chunks(phi_k), chunks(v)))
    return jnp.moveaxis(out, 0, 1).reshape(B, n * chunk, K, G, -1)[:, :T]


def linear_attention(
    q: Array,
    k: Array,
    v: Array,
    *,
    feature_map: str | Callable[[Array], Array] = "elu",
    causal: bool = False,
    chunk: int = 128,
) -> Array:
    """Linear attention with ``phi = feature_map`` (``"elu"``: elu + 1, ``"relu"``, or a
    function of ``[..., H]`` returning non-negative features). Output ``[B, T, N, Hv]``."""
    phi = feature_function(feature_map)
    return kernel_attention(phi(q), phi(k), v, causal=causal, chunk=chunk)


def feature_function(feature_map: str | Callable[[Array], Array]) -> Callable[[Array], Array]:
    """The feature map named ``feature_map`` (a key of :data:`FEATURE_MAPS`), or the function."""
    if isinstance(feature_map, str):
        if feature_map not in FEATURE_MAPS:
            raise ValueError(
                f"feature_map must be one of {sorted(FEATURE_MAPS)} or a function, "
                f"got {feature_map!r}"
            )
        return FEATURE_MAPS[feature_map]
    return feature_map
