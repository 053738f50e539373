"""Single-head attention for RNN encoder-decoders: Bahdanau (additive), Chorowski's
location-aware additive attention and Luong (bilinear).

All take a decoder state ``query [B, Dq]`` (one step) or ``[B, T, Dq]`` (all steps) and encoder
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

__all__ = ["AdditiveAttention", "BilinearAttention", "LocationAwareAttention"]

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


class LocationAwareAttention(AdditiveAttention):
    """Chorowski et al. (2015) location-aware attention: score
    ``v^T tanh(W_q q + W_k k + W_loc conv(previous_weights))`` (one head,
    :func:`attn.scores.location_aware`).

    Params: :class:`AdditiveAttention`'s, ``filters [width, location_filters]`` and
    ``w_location [location_filters, D]``. A recurrent decoder feeds each step the weights the
    previous step returned (``previous_weights [B, S]``, or ``[B, T, S]`` for ``T`` queries), so
    the scores know where the alignment was and can move on from there.
    ``__call__(query, keys, values=None, *, previous_weights, mask=None)`` returns
    ``(context, weights)`` as :class:`AdditiveAttention` does.
    """

    def __init__(
        self,
        query_features: int,
        key_features: int,
        hidden_features: int,
        *,
        location_filters: int = 32,
        width: int = 31,
        weighting: Callable[..., Array] | str = "softmax",
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        super().__init__(
            query_features,
            key_features,
            hidden_features,
            weighting=weighting,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        init = nnx.initializers.lecun_normal()
        # An alignment sums to 1, so a filter's response stays at the scale of its weights.
        self.filters = nnx.Param(init(rngs.params(), (width, location_filters), param_dtype))
        self.w_location = nnx.Param(
            init(rngs.params(), (location_filters, hidden_features), param_dtype)
        )

    def __call__(  # type: ignore[override]
        self,
        query: Array,
        keys: Array,
        values: Array | None = None,
        *,
        previous_weights: Array,
        mask: masks.Mask | Array | None = None,
    ) -> tuple[Array, Array]:
        """``(context [B, (T,) Dv], weights [B, (T,) S])``; ``previous_weights`` is shaped like
        ``weights``."""
        expected = (*query.shape[:-1], keys.shape[1])
        got = getattr(previous_weights, "shape", None)
        if got != expected:
            raise ValueError(
                f"previous_weights must be [B, (T,) S] = {list(expected)} for query "
                f"{query.shape} and keys {keys.shape}, got {got}"
            )
        previous_b1ts = previous_weights.reshape(query.shape[0], 1, -1, keys.shape[1])
        score = functools.partial(
            attn.scores.location_aware,
            w_q=self.w_q[...],
            w_k=self.w_k[...],
            v=self.v[...],
            previous_weights=previous_b1ts,
            filters=self.filters[...],
            w_location=self.w_location[...],
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
