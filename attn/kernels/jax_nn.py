"""``jax.nn.dot_product_attention`` (cuDNN flash attention on GPU, or XLA) behind attend's API.

Masks are translated to its native arguments where their :class:`attn.masks.Factors` match
exactly (``causal()`` -> ``is_causal``, ``causal() & sliding_window(left)`` adds
``local_window_size``, ``padding`` -> sequence lengths, and ``&`` of these); any other mask is
passed as a dense boolean array. jax.nn averages uniformly
over a query row that sees no key; attend's policy is output 0, so such rows are zeroed here.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from attn import masks, scores
from attn.kernels import fold, rules
from attn.kernels.request import Request

__all__ = ["attention", "unsupported"]

_CUDNN_DTYPES = (jnp.float16, jnp.bfloat16)


def _scale(request: Request) -> float | None:
    """The logit scale when score and weighting amount to ``softmax(scale * q . k)``."""
    base, keywords = fold.unwrap(request.score)
    recognized = fold.recognize_weighting(request.weighting)
    if recognized is None or recognized.kind != "softmax" or recognized.param is not None:
        return None
    temperature = recognized.temperature
    if not isinstance(temperature, int | float) or not temperature > 0:
        return None
    if base is scores.dot and not keywords:
        return 1.0 / temperature
    if base is scores.scaled_dot and set(keywords) <= {"scale"}:
        scale = keywords.get("scale")
        if scale is None:
            scale = 1.0 / math.sqrt(request.q.shape[-1])
        if isinstance(scale, int | float):
            return scale / temperature
    return None


def unsupported(request: Request, *, backend: str) -> str | None:
    """Why jax.nn's cuDNN path cannot run ``request`` (``None`` if it can)."""
    if backend != "gpu":
        return f"run on backend {backend!r} (cuDNN needs a GPU)"
    q, k, v = request.q, request.k, request.v
    if q.dtype not in _CUDNN_DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        return f"take dtypes q {q.dtype}, k {k.dtype}, v {v.dtype} (needs float16 or bfloat16)"
    return _unsupported_anywhere(request)


def _unsupported_anywhere(request: Request) -> str | None:
    if request.v.shape[-1] != request.q.shape[-1]:
        return f"take value head dim {request.v.shape[-1]} != query head dim {request.q.shape[-1]}"
    if _scale(request) is None:
        return (
            f"compute score {fold.describe(request.score)} with weighting "
            f"{fold.describe(request.weighting)} (needs dot or scaled_dot, a plain softmax and "
            "Python-number scale and temperature)"
        )
    if request.dropout_active:
        return "apply dropout"
    if request.return_weights:
        return "return weights"
    if request.logits_soft_cap is not None:
        return "apply logits_soft_cap (jax.nn.dot_product_attention has no soft cap)"
    if request.precision is not None:
        return "take precision (jax.nn.dot_product_attention has no precision argument)"
    if jnp.dtype(request.logits_dtype) != jnp.float32:
        return f"compute logits in {jnp.dtype(request.logits_dtype).name} (it uses float32)"
    return None


def _native(mask: masks.Mask | None, shape: tuple[int, int, int, int]) -> Any:
    """jax.nn keyword arguments equal to ``mask`` and, bool ``[B, T]``, which query rows see
    any key; ``None`` if it has no native form.

    Native are the forms cuDNN takes: a causal mask with an optional left window (jax.nn
    refuses a right window on cuDNN without causal) and per-example lengths, and their ``&``.
    """
    B = shape[0]
    factors = masks.Factors() if mask is None else mask.factors()
    if factors.rest is not None or factors.kv_valid is not None:
        return None
    kwargs: dict[str, Any] = {}
    if factors.left is not None or factors.right is not None:
        if factors.right != 0:
            return None
        kwargs["is_causal"] = True
        if factors.left is not None:
            kwargs["local_window_size"] = (factors.left, 0)
    for name, lengths in (
        ("query_seq_lengths", factors.q_lengths),
        ("key_value_seq_lengths", factors.kv_lengths),
    ):
        if lengths is not None:
            kwargs[name] = jnp.broadcast_to(jnp.asarray(lengths, jnp.int32), (B,))
    first, last = factors.interval(shape)
    return kwargs, first <= last


def attention(request: Request, *, implementation: str = "cudnn") -> Any:
    """Run ``request`` through ``jax.nn.dot_product_attention(implementation=...)``.

    ``implementation="xla"`` runs the same translation on any backend (the tests use it).
    Returns ``out`` or ``(out, lse)`` as the request asks.
    """
    reason = _unsupported_anywhere(request)
    if reason is not None:
        raise ValueError(f"jax.nn.dot_product_attention cannot {reason}")
    shape = request.shape
    B, N, T, _ = shape
    native = _native(request.mask, shape)
    if native is None:  # any other mask: its dense boolean form
        dense = jnp.broadcast_to(request.mask.dense(shape), shape)
        kwargs, seen = {"mask": dense}, dense.any(axis=-1)
    else:
        kwargs, seen_bt = native
        seen = seen_bt[:, None, :]
    bias = rules.dense_values(request.bias, shape) if request.bias_is_rule else request.bias
    result = jax.nn.dot_product_attention(
        request.q,
        request.k,
        request.v,
        bias=bias,
        scale=_scale(request),
        implementation=implementation,
        return_residual=request.return_lse,
        **kwargs,
    )
    out, lse = result if request.return_lse else (result, None)
    # Rows that see no key: jax.nn averages them, attend outputs 0 and lse -inf.
    seen_btn = jnp.broadcast_to(seen, (B, N, T)).transpose(0, 2, 1)
    out = jnp.where(seen_btn[..., None], out, 0).astype(out.dtype)
    if lse is None:
        return out
    lse = jnp.where(seen_btn, lse.astype(jnp.float32), -jnp.inf)
    return out, lse.transpose(0, 2, 1)
