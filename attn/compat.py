"""Drop-in signatures of peer libraries, mapped onto :func:`attn.attend`.

``attn.compat.dot_product_attention`` takes exactly ``jax.nn.dot_product_attention``'s
arguments, so switching is ``jax.nn.dot_product_attention`` -> ``attn.compat.
dot_product_attention``. Differences, on purpose:

* A query row that may see no key outputs 0 (jax.nn averages the values uniformly; its padded
  queries are zeroed, as here), and its residual is ``-inf``.
* ``implementation``: ``None`` is attend's ``"auto"`` (cuDNN on GPU where it applies, the
  chunked kernel for long sequences, dense otherwise: the same function in each case);
  ``"xla"`` is ``"dense"`` (the composition compiled by XLA, as jax.nn's XLA path);
  ``"cudnn"`` is ``"cudnn"`` (raises off GPU, as jax.nn does). attend's own names
  (``"dense"``, ``"chunked"``, ``"pallas"``, ``"auto"``) are accepted too.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from attn import masks
from attn.attend import attend

__all__ = ["dot_product_attention"]

# jax.nn's implementation names -> attend's.
_IMPLEMENTATIONS = {None: "auto", "xla": "dense", "cudnn": "cudnn"}


def _window(local_window_size: int | tuple[int, int]) -> masks.Mask:
    """jax.nn's ``local_window_size``: ``(left, right)``, or one int for both sides."""
    if isinstance(local_window_size, int):
        local_window_size = (local_window_size, local_window_size)
    left, right = local_window_size
    return masks.sliding_window(left, right)


def _mask(
    mask: Any,
    *,
    is_causal: bool,
    query_seq_lengths: Any,
    key_value_seq_lengths: Any,
    local_window_size: int | tuple[int, int] | None,
) -> Any:
    """jax.nn's masking arguments as one attn mask (their ``&``), or ``None``."""
    parts = [] if mask is None else [masks.from_array(mask)]
    if is_causal:
        parts.append(masks.causal())
    if local_window_size is not None:
        parts.append(_window(local_window_size))
    if query_seq_lengths is not None or key_value_seq_lengths is not None:
        parts.append(masks.padding(query_seq_lengths, key_value_seq_lengths))
    combined = None
    for part in parts:
        combined = part if combined is None else combined & part
    return combined


def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    scale: float | None = None,
    is_causal: bool = False,
    query_seq_lengths: jax.Array | None = None,
    key_value_seq_lengths: jax.Array | None = None,
    local_window_size: int | tuple[int, int] | None = None,
    implementation: str | None = None,
    return_residual: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """``jax.nn.dot_product_attention``'s call, computed by :func:`attn.attend`.

    Args:
      query: ``[B, T, N, H]`` or ``[T, N, H]``.
      key: ``[B, S, K, H]`` or ``[S, K, H]`` with ``N % K == 0``.
      value: shaped like ``key``.
      bias: float array broadcastable to ``[B, N, T, S]`` (``[N, T, S]`` without batch).
      mask: boolean array broadcastable to ``[B, N, T, S]``; ``True`` = may attend.
      scale: logit scale (default ``1 / sqrt(H)``).
      is_causal: query ``i`` sees keys ``j <= i`` (aligned at the top left).
      query_seq_lengths, key_value_seq_lengths: int ``[B]`` valid lengths.
      local_window_size: ``(left, right)`` or one int for both: query ``i`` sees
        ``i - left <= j <= i + right``.
      implementation: ``None``, ``"xla"``, ``"cudnn"`` (see the module docstring) or one of
        attend's names.
      return_residual: also return the log-sum-exp of each row, ``[B, T, N]`` (``[T, N]``
        without batch), in the key's dtype and without gradient, as jax.nn does.

    Returns:
      The output shaped like ``query`` (value head size), and the residual if asked.
      Rows that see no key output 0 (residual ``-inf``); jax.nn averages them.
    """
    combined = _mask(
        mask,
        is_causal=is_causal,
        query_seq_lengths=query_seq_lengths,
        key_value_seq_lengths=key_value_seq_lengths,
        local_window_size=local_window_size,
    )
    result = attend(
        query,
        key,
        value,
        mask=combined,
        bias=bias,
        scale=scale,
        implementation=_IMPLEMENTATIONS.get(implementation, implementation),
        return_lse=return_residual,
    )
    if not return_residual:
        return result
    out, lse = result  # lse [..., N, T]
    residual = jnp.swapaxes(lse, -1, -2).astype(jnp.asarray(key).dtype)
    return out, jax.lax.stop_gradient(residual)
