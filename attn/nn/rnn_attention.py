"""Single-head attention for RNN encoder-decoders: Bahdanau (additive) and Luong (bilinear).

Both take a decoder state ``query [B, Dq]`` (one step) or ``[B, T, Dq]`` (all steps) and encoder
outputs ``keys [B, S, Dk]``, and return the context and the weights, as the papers use both.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

import attn
from attn import masks

__all__ = ["AdditiveAttention", "BilinearAttention"]

Array = jax.Array


def _key_mask(mask: masks.Mask | Array | None, batch_size: int, num_keys: int) -> Any:
    """A ``[B, S]`` key-validity array becomes ``[B, 1, 1, S]``; Masks pass through."""
    if mask is None or isinstance(mask, masks.Mask):
        return mask
    mask = jnp.asarray(mask)
    if mask.dtype != bool or mask.shape != (batch_size, num_keys):
        raise ValueError(
            f"mask must be a bool array [B, S] = {[batch_size, num_keys]} (True = valid key) or "
            f"an attn.masks.Mask, got {mask.dtype}{list(mask.shape)}"
        )
    return mask[:, None, None, :]


def _attend_one_head(
    query: Array,
    keys: Array,
    values: Array | None,
    mask: masks.Mask | Array | None,
    score: Callable[..., Array],
    weighting: Callable[..., Array] | str,
    query_features: int,
    key_features: int,
) -> tuple[Array, Array]:
    if getattr(query, "ndim", None) not in (2, 3) or query.shape[-1] != query_features:
        raise ValueError(
            f"query must be [B, {query_features}] or [B, T, {query_features}], "
            f"got {getattr(query, 'shape', query)}"
        )
    if getattr(keys, "ndim", None) != 3 or keys.shape[-1] != key_features:
        raise ValueError(f"keys must be [B, S, {key_features}], got {getattr(keys, 'shape', keys)}")
    values = keys if values is None else values
    if getattr(values, "ndim", None) != 3 or values.shape[:2] != keys.shape[:2]:
        raise ValueError(
            f"values must be [B, S, Dv] with the keys' [B, S] = {keys.shape[:2]}, "
            f"got {getattr(values, 'shape', values)}"
        )
    if query.shape[0] != keys.shape[0]:
        raise ValueError(f"query {query.shape} and keys {keys.shape} differ in batch size")
    single_step = query.ndim == 2
    q = query[:, None, None, :] if single_step else query[:, :, None, :]  # [B, T, 1, Dq]
    out_bt1v, weights_b1ts = attn.attend(
        q,
        keys[:, :, None, :],
        values[:, :, None, :],
        score=score,
        mask=_key_mask(mask, *keys.shape[:2]),
        weighting=weighting,
        return_weights=True,
    )
    context, weights = out_bt1v[:, :, 0, :], weights_b1ts[:, 0]
    if single_step:
        return context[:, 0], weights[:, 0]
    return context, weights


class AdditiveAttention(nnx.Module):
    """Bahdanau et al. (2015) attention: score ``v^T tanh(W_q q + W_k k)`` (one head).

    Params: ``w_q [Dq, D]``, ``w_k [Dk, D]``, ``v [D]`` with ``D = hidden_features``.
    ``__call__(query [B, Dq] | [B, T, Dq], keys [B, S, Dk], values=None, *, mask=None)`` returns
    ``(context [B, (T,) Dv], weights [B, (T,) S])``; ``values`` default to ``keys``; ``mask`` is a
    bool ``[B, S]`` key validity (``True`` = real) or an :class:`attn.masks.Mask`. A query with no
    valid key gets weights 0 and context 0.
    """

    def __init__(
        self,
        query_features: int,
        key_features: int,
        hidden_features: int,
        *,
        weighting: Callable[..., Array] | str = "softmax",
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        init = nnx.initializers.lecun_normal()
        self.query_features = query_features
        self.key_features = key_features
        self.w_q = nnx.Param(init(rngs.params(), (query_features, hidden_features), param_dtype))
        self.w_k = nnx.Param(init(rngs.params(), (key_features, hidden_features), param_dtype))
        # v reads a tanh in [-1, 1] over D features: unit-variance logits at 1/sqrt(D).
        self.v = nnx.Param(
            jax.random.normal(rngs.params(), (hidden_features,), param_dtype)
            / jnp.sqrt(hidden_features).astype(param_dtype)
        )
        self.weighting = attn.catalog.get("weighting", weighting)

    def __call__(
        self,
        query: Array,
        keys: Array,
        values: Array | None = None,
        *,
        mask: masks.Mask | Array | None = None,
    ) -> tuple[Array, Array]:
        """``(context [B, (T,) Dv], weights [B, (T,) S])``; see the class docstring."""
        score = functools.partial(
            attn.scores.additive, w_q=self.w_q[...], w_k=self.w_k[...], v=self.v[...]
        )
        return _attend_one_head(
            query, keys, values, mask, score, self.weighting, self.query_features, self.key_features
        )


class BilinearAttention(nnx.Module):
    """Luong et al. (2015) "general" attention: score ``q^T W k`` (one head, no scaling).

    Param: ``weight [Dq, Dk]``. Same call and results as :class:`AdditiveAttention`.
    """

    def __init__(
        self,
        query_features: int,
        key_features: int,
        *,
        weighting: Callable[..., Array] | str = "softmax",
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.query_features = query_features
        self.key_features = key_features
        self.weight = nnx.Param(
            nnx.initializers.lecun_normal()(
                rngs.params(), (query_features, key_features), param_dtype
            )
        )
        self.weighting = attn.catalog.get("weighting", weighting)

    def __call__(
        self,
        query: Array,
        keys: Array,
        values: Array | None = None,
        *,
        mask: masks.Mask | Array | None = None,
    ) -> tuple[Array, Array]:
        """``(context [B, (T,) Dv], weights [B, (T,) S])``; see :class:`AdditiveAttention`."""
        score = functools.partial(attn.scores.general, weight=self.weight[...])
        return _attend_one_head(
            query, keys, values, mask, score, self.weighting, self.query_features, self.key_features
        )
