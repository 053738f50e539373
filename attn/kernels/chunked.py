"""Chunked (flash-style) attention in pure JAX: validation, tile planning and layout around the
kernel of :mod:`attn.kernels.flash`.

Logits here are plain ``q . k + bias`` (optionally soft-capped): scaling, temperature and
normalised (cosine) scores are folded into q and k by the caller (:mod:`attn.kernels.fold`),
where autodiff handles them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from attn import masks
from attn.kernels import bias_tiles, flash, fold, online, rules
from attn.kernels.tiling import plan_tiles

__all__ = ["chunked_attention", "tiled_attention", "traceable_mask"]

Array = jax.Array


def _default_param(weighting: str, kv_len: int) -> float | None:
    """The same defaults as attn.weighting: sigmoid bias -log(S), ReLU scale 1/S."""
    if weighting == "sigmoid":
        return -math.log(max(kv_len, 1))
    if weighting in ("relu", "squared_relu"):
        return 1.0 / max(kv_len, 1)
    return None


def traceable_mask(mask: masks.Mask, shape: tuple[int, int, int, int]) -> masks.Mask:
    """``mask`` if its rule runs on traced tile indices; otherwise its dense form as a jax array
    (correct for any rule, at the cost of an O(T * S) boolean constant)."""
    if rules.is_traceable(lambda m: m.rule, mask, shape):
        return mask
    with jax.ensure_compile_time_eval():
        return masks.from_array(jnp.asarray(mask.dense(shape)))


def chunked_attention(
    q: Array,
    k: Array,
    v: Array,
    *,
    mask: masks.Mask | Array | None = None,
    bias: rules.Rule | Array | None = None,
    weighting: str = "softmax",
    weighting_param: Any = None,
    logits_soft_cap: float | None = None,
    precision: Any = None,
    q_tile: int = 512,
    kv_tile: int = 256,
    return_lse: bool = False,
) -> Array | tuple[Array, Array]:
    """Attention with logits ``q . k + bias``, computed tile by tile.

    No ``[T, S]`` array is built in the forward or backward pass (custom VJP recomputing tiles),
    and tile pairs that a static mask leaves empty are skipped. :func:`attn.attend` with
    ``implementation="chunked"`` calls this after folding its score into q and k.

    Args:
      q: queries ``[B, T, N, H]``; the logits are the plain dot product (scale q beforehand).
      k: keys ``[B, S, K, H]`` with ``N % K == 0``.
      v: values ``[B, S, K, Hv]``.
      mask: an :class:`attn.masks.Mask` or boolean array broadcastable to ``[B, N, T, S]``.
      bias: an elementwise rule ``(b, h, q_idx, kv_idx) -> float`` evaluated per tile (e.g.
        :func:`attn.positional.alibi_rule`; the float arrays of a pytree rule get gradients), or
        a float array broadcastable to ``[B, N, T, S]``, sliced per tile and never copied
        (:mod:`attn.kernels.bias_tiles`; its gradient has its own shape).
      weighting: ``"softmax"``, ``"sigmoid"``, ``"relu"`` or ``"squared_relu"``.
      weighting_param: per query row, a scalar, per-head ``[N]`` or broadcastable to
        ``[B, N, T, 1]``: softmax's sink logit (``None``: no sink), sigmoid's bias (``None``:
        ``-log S``), the ReLU scale (``None``: ``1 / S``). Differentiable.
      logits_soft_cap: a positive number ``cap``: logits become ``cap * tanh(logits / cap)``
        (after the bias, before the mask and weighting), forward and backward.
      precision: ``jax.lax.Precision`` (or its string) of every matmul, as in ``jnp.einsum``.
      q_tile, kv_tile: tile sizes (clipped to T and S; other lengths are padded internally).
      return_lse: also return the log-sum-exp of each row ``[B, N, T]`` (softmax only).

    Returns:
      ``out [B, T, N, Hv]`` in v's dtype (0 for rows that see no key), or ``(out, lse)``.
    """
    return tiled_attention(
        flash.kernel,
        q,
        k,
        v,
        mask=mask,
        bias=bias,
        weighting=weighting,
        weighting_param=weighting_param,
        logits_soft_cap=logits_soft_cap,
        precision=precision,
        q_tile=q_tile,
        kv_tile=kv_tile,
        return_lse=return_lse,
    )


def tiled_attention(
    kernel: Callable[..., tuple[Array, Array | None]],
    q: Array,
    k: Array,
    v: Array,
    *,
    mask: masks.Mask | Array | None,
    bias: rules.Rule | Array | None,
    weighting: str,
    weighting_param: Any,
    logits_soft_cap: float | None,
    precision: Any,
    q_tile: int,
    kv_tile: int,
    return_lse: bool,
) -> Array | tuple[Array, Array]:
    """:func:`chunked_attention` with another ``kernel`` on the same layout and plan (see
    :func:`attn.kernels.flash.with_backward`): validates, plans tiles, lays out and calls it."""
    if weighting not in online.KINDS:
        raise ValueError(
            f"chunked_attention: weighting must be one of {sorted(online.KINDS)}, got {weighting!r}"
        )
    kind = online.KINDS[weighting]
    if return_lse and not kind.has_lse:
        raise ValueError(f"chunked_attention: return_lse needs softmax, got {weighting!r}")
    for name, x in (("q", q), ("k", k), ("v", v)):
        if getattr(x, "ndim", None) != 4:
            raise ValueError(f"{name} must have rank 4, got {getattr(x, 'shape', x)}")
    B, T, N, H = q.shape
    _, S, K, _ = k.shape
    if k.shape != (B, S, K, H) or v.shape[:3] != (B, S, K) or K < 1 or N % K:
        raise ValueError(
            f"need q [B, T, N, H], k [B, S, K, H], v [B, S, K, Hv] with N % K == 0; "
            f"got q {q.shape}, k {k.shape}, v {v.shape}"
        )
    shape = (B, N, T, S)
    if T == 0 or S == 0:
        # No tiles: no queries, or no keys for any query (output 0, lse -inf), as in dense.
        out = jnp.zeros((B, T, N, v.shape[-1]), v.dtype)
        return (out, jnp.full((B, N, T), -jnp.inf, jnp.float32)) if return_lse else out
    bias_values = None
    if bias is not None and not callable(bias):
        bias_values, bias = bias_tiles.check(bias, shape), None
        bias_values = bias_values.reshape((1,) * (4 - bias_values.ndim) + bias_values.shape)
    cap = check_soft_cap(logits_soft_cap)
    if bias is not None and not rules.is_traceable(lambda r: r, bias, shape):
        raise ValueError(
            "chunked_attention: the bias rule must run on traced indices (write it with jnp "
            "operations, not NumPy functions)"
        )
    if mask is not None:
        mask = traceable_mask(masks.as_mask(mask), shape)
    plan, visit = plan_tiles(mask, shape, q_tile, kv_tile)
    Tp, Sp = plan.padded_lengths
    q_rows, k_bk, v_bk = _rows(q, Tp, K), _heads_first(k, Sp), _heads_first(v, Sp)
    if weighting_param is None:
        weighting_param = _default_param(weighting, S)
    param_rows = None
    if weighting_param is not None:
        param = fold.row_param(weighting_param, shape, f"{weighting} parameter")
        param = jnp.broadcast_to(param, (B, N, T, 1)).transpose(0, 2, 1, 3)  # [B, T, N, 1]
        param_rows = _rows(param, Tp, K)[..., 0]
    mask_arrays, mask_rebuild = rules.partition(mask) if mask is not None else ([], None)
    bias_arrays, bias_rebuild = rules.partition(bias) if bias is not None else ([], None)
    # As jax arrays: a NumPy leaf cannot be indexed by the kernel's traced tile indices.
    mask_arrays = [jnp.asarray(a) for a in mask_arrays]
    bias_arrays = [jnp.asarray(a) for a in bias_arrays]
    st = flash.Static(plan, kind, (B, N, K), S, mask_rebuild, bias_rebuild, cap, precision)
    out, lse = kernel(
        st, q_rows, k_bk, v_bk, mask_arrays, bias_arrays, bias_values, param_rows, visit
    )
    out = _unrows(out, B, T, N, K).astype(v.dtype)
    if return_lse:
        return out, online.api_lse(_unrows(lse[..., None], B, T, N, K)[..., 0].transpose(0, 2, 1))
    return out


def check_soft_cap(cap: Any) -> float | None:
    """``cap`` as a positive Python float (``None`` stays ``None``); a traced value is refused,
    because the kernels build the cap into their program."""
    if cap is None:
        return None
    try:
        value = float(cap)
    except (TypeError, jax.errors.ConcretizationTypeError) as error:
        raise TypeError(
            f"logits_soft_cap must be a positive number known at trace time, got {cap!r}"
        ) from error
    if not value > 0:
        raise ValueError(f"logits_soft_cap must be > 0, got {cap!r}")
    return value


def _pad(x: Array, length: int) -> Array:
    """Zero-pad axis 1 to ``length``."""
    return jnp.pad(x, [(0, 0), (0, length - x.shape[1])] + [(0, 0)] * (x.ndim - 2))


def _heads_first(x: Array, length: int) -> Array:
    """``[B, L, K, D]`` -> ``[B * K, length, D]`` (zero-padded)."""
    x = jnp.moveaxis(_pad(x, length), 2, 1)
    return x.reshape(-1, *x.shape[2:])


def _rows(x: Array, length: int, num_kv_heads: int) -> Array:
    """Queries ``[B, T, N, D]`` -> kernel rows ``[B * K, length * G, D]`` (row ``t * G + g``)."""
    B, _, N, D = x.shape
    G = N // num_kv_heads
    x = _pad(x, length).reshape(B, length, num_kv_heads, G, D)
    return jnp.moveaxis(x, 2, 1).reshape(B * num_kv_heads, length * G, D)


def _unrows(x: Array, batch: int, length: int, num_heads: int, num_kv_heads: int) -> Array:
    """Kernel rows ``[B * K, Tp * G, D]`` -> ``[B, length, N, D]`` (padding dropped)."""
    G = num_heads // num_kv_heads
    x = x.reshape(batch, num_kv_heads, -1, G, x.shape[-1])[:, :, :length]
    return jnp.moveaxis(x, 1, 2).reshape(batch, length, num_heads, -1)
