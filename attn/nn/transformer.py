"""Transformer blocks and encoder/decoder stacks built on :class:`MultiHeadAttention`."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from attn import masks
from attn.nn.attention import MultiHeadAttention
from attn.nn.dropout import Dropout, maybe_active
from attn.nn.sharding import FSDP, fsdp_axes

__all__ = ["MLP", "TransformerBlock", "TransformerDecoder", "TransformerEncoder"]

Array = jax.Array

NORMS: dict[str, Callable[..., nnx.Module]] = {
    "layer_norm": nnx.LayerNorm,
    "rms_norm": nnx.RMSNorm,
}
ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": jax.nn.gelu,
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "tanh": jnp.tanh,
}


def _lookup(table: dict[str, Any], name: Any, what: str) -> Any:
    if callable(name) and what == "activation":
        return name
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; valid: {', '.join(sorted(table))}")
    return table[name]


class MLP(nnx.Module):
    """Position-wise feed-forward ``Linear(D -> F) -> activation -> dropout -> Linear(F -> D)``."""

    def __init__(
        self,
        features: int,
        mlp_features: int,
        *,
        activation: str | Callable[[Array], Array] = "gelu",
        dropout_rate: float | Array = 0.0,
        use_bias: bool = True,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        linear = functools.partial(
            nnx.Linear, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )
        # Fully sharded data parallelism splits both kernels along the model's feature axis.
        self.hidden = linear(features, mlp_features, kernel_metadata=fsdp_axes(FSDP, None))
        self.activation = _lookup(ACTIVATIONS, activation, "activation")
        self.dropout = Dropout(dropout_rate, rngs=rngs if maybe_active(dropout_rate) else None)
        self.output = linear(mlp_features, features, kernel_metadata=fsdp_axes(None, FSDP))

    def __call__(self, x: Array, *, deterministic: bool | None = None) -> Array:
        """``[..., D] -> [..., D]``."""
        hidden = self.dropout(self.activation(self.hidden(x)), deterministic=deterministic)
        return self.output(hidden)


class TransformerBlock(nnx.Module):
    """Self-attention, optional cross-attention and an MLP, each with a residual connection.

    ``pre_norm=True`` normalises each sublayer's input (``x + f(norm(x))``; stacks then end
    with a final norm); ``pre_norm=False`` is the original post-norm ``norm(x + f(x))``.
    ``dropout_rate`` applies to each sublayer's output and inside the MLP. ``causal=True`` adds
    ``attn.masks.causal()`` to the self-attention mask (decoders); while decoding the KV cache's
    own causal mask applies instead.

    ``attention`` holds keyword arguments of :class:`MultiHeadAttention` under its own names
    (``score``, ``weighting``, ``mask``, ``positional``, ``implementation``, ``qk_norm``,
    ``dropout_rate`` of the attention weights, ``variant``, ...), passed unchanged to the
    self-attention; the cross-attention gets them without ``positional`` and ``mask``, which
    describe positions within one sequence. ``num_kv_heads``, ``head_dim`` (default
    ``features // num_heads``), ``use_bias``, ``record_weights``, ``dtype`` and ``param_dtype``
    go to both attentions too.
    """

    def __init__(
        self,
        features: int,
        num_heads: int,
        mlp_features: int,
        *,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        pre_norm: bool = True,
        norm: str = "layer_norm",
        activation: str | Callable[[Array], Array] = "gelu",
        dropout_rate: float | Array = 0.0,
        causal: bool = False,
        cross_attention: bool = False,
        context_features: int | None = None,
        attention: Mapping[str, Any] | None = None,
        use_bias: bool = False,
        record_weights: bool = False,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        make_norm = functools.partial(
            _lookup(NORMS, norm, "norm"), features, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )
        make_attention = functools.partial(
            MultiHeadAttention,
            features,
            num_heads,
            num_kv_heads=num_kv_heads,
            head_dim=head_dim,
            use_bias=use_bias,
            record_weights=record_weights,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        attention = dict(attention or {})
        self.pre_norm = pre_norm
        self.causal = causal
        self.self_attention_norm = make_norm()
        self.self_attention = make_attention(**attention)
        if cross_attention:
            self.cross_attention_norm = make_norm()
            # Positions within one sequence: query and context positions are not comparable.
            across = {k: v for k, v in attention.items() if k not in ("positional", "mask")}
            self.cross_attention = make_attention(kv_features=context_features, **across)
        else:
            self.cross_attention_norm = nnx.data(None)
            self.cross_attention = nnx.data(None)
        self.mlp_norm = make_norm()
        self.mlp = MLP(
            features,
            mlp_features,
            activation=activation,
            dropout_rate=dropout_rate,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.dropout = Dropout(dropout_rate, rngs=rngs if maybe_active(dropout_rate) else None)

    def _residual(
        self, x: Array, norm: nnx.Module, sublayer: Callable[[Array], Array], deterministic: Any
    ) -> Array:
        if self.pre_norm:
            return x + self.dropout(sublayer(norm(x)), deterministic=deterministic)
        return norm(x + self.dropout(sublayer(x), deterministic=deterministic))

    def __call__(
        self,
        x: Array,
        *,
        mask: masks.Mask | Array | None = None,
        context: Array | None = None,
        context_mask: masks.Mask | Array | None = None,
        positions: Array | None = None,
        deterministic: bool | None = None,
        decode: bool = False,
        prompt_lengths: Array | None = None,
    ) -> Array:
        """``x [B, T, D] -> [B, T, D]``.

        Args:
          x: ``[B, T, features]``.
          mask: self-attention mask (Mask or bool array broadcastable to ``[B, N, T, T]``, or to
            ``[B, N, T, L]`` over the cache slots when decoding).
          context: ``[B, S, context_features]`` for cross-attention (required iff the block
            was built with ``cross_attention=True``).
          context_mask: cross-attention mask broadcastable to ``[B, N, T, S]``, e.g.
            ``attn.masks.padding(kv_lengths=context_lengths)``.
          positions: RoPE positions ``[T]`` or ``[B, T]`` (see :class:`MultiHeadAttention`).
          deterministic: disable dropout (default: each submodule's ``deterministic``).
          decode, prompt_lengths: KV-cache decoding of the self-attention (see
            :meth:`MultiHeadAttention.__call__`); call :meth:`init_cache` first.
        """
        if (context is None) != (self.cross_attention is None):
            raise ValueError(
                "context must be given exactly when the block has cross-attention "
                f"(cross_attention={self.cross_attention is not None}, "
                f"context={'given' if context is not None else None})"
            )
        if self.causal and not decode:
            mask = masks.causal() if mask is None else masks.causal() & masks.as_mask(mask)

        def self_attention(h: Array) -> Array:
            return self.self_attention(
                h,
                mask=mask,
                positions=positions,
                deterministic=deterministic,
                decode=decode,
                prompt_lengths=prompt_lengths,
            )

        x = self._residual(x, self.self_attention_norm, self_attention, deterministic)
        if self.cross_attention is not None:

            def cross_attention(h: Array) -> Array:
                return self.cross_attention(
                    h, context, mask=context_mask, deterministic=deterministic
                )

            x = self._residual(x, self.cross_attention_norm, cross_attention, deterministic)

        def mlp(h: Array) -> Array:
            return self.mlp(h, deterministic=deterministic)

        return self._residual(x, self.mlp_norm, mlp, deterministic)

    def init_cache(self, batch_size: int, max_length: int, dtype: Any = None) -> None:
        """Create the self-attention's KV cache (see :meth:`MultiHeadAttention.init_cache`)."""
        self.self_attention.init_cache(batch_size, max_length, dtype)


class _Stack(nnx.Module):
    """``num_layers`` blocks and, in pre-norm mode, a final norm."""

    def __init__(
        self,
        num_layers: int,
        features: int,
        num_heads: int,
        mlp_features: int,
        *,
        pre_norm: bool,
        norm: str,
        rngs: nnx.Rngs,
        **block_options: Any,
    ):
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        self.layers = nnx.List(
            [
                TransformerBlock(
                    features,
                    num_heads,
                    mlp_features,
                    pre_norm=pre_norm,
                    norm=norm,
                    rngs=rngs,
                    **block_options,
                )
                for _ in range(num_layers)
            ]
        )
        if pre_norm:
            self.final_norm = _lookup(NORMS, norm, "norm")(
                features,
                dtype=block_options.get("dtype"),
                param_dtype=block_options.get("param_dtype", jnp.float32),
                rngs=rngs,
            )
        else:
            self.final_norm = nnx.data(None)

    def _run(self, x: Array, **call_options: Any) -> Array:
        for layer in self.layers:
            x = layer(x, **call_options)
        return x if self.final_norm is None else self.final_norm(x)


class TransformerEncoder(_Stack):
    """A stack of ``num_layers`` bidirectional blocks, ``[B, T, D] -> [B, T, D]``.

    Keyword options other than ``pre_norm`` and ``norm`` are passed to every block (see
    :class:`TransformerBlock`); ``causal``, ``cross_attention`` are not allowed here.
    """

    def __init__(
        self,
        num_layers: int,
        features: int,
        num_heads: int,
        mlp_features: int,
        *,
        pre_norm: bool = True,
        norm: str = "layer_norm",
        rngs: nnx.Rngs,
        **block_options: Any,
    ):
        for name in ("causal", "cross_attention"):
            if name in block_options:
                raise ValueError(f"TransformerEncoder takes no {name!r}; use TransformerDecoder")
        super().__init__(
            num_layers,
            features,
            num_heads,
            mlp_features,
            pre_norm=pre_norm,
            norm=norm,
            rngs=rngs,
            **block_options,
        )

    def __call__(
        self,
        x: Array,
        *,
        mask: masks.Mask | Array | None = None,
        positions: Array | None = None,
        deterministic: bool | None = None,
    ) -> Array:
        """``x [B, T, D] -> [B, T, D]``; ``mask`` e.g. ``attn.masks.padding(lengths, lengths)``."""
        return self._run(x, mask=mask, positions=positions, deterministic=deterministic)


class TransformerDecoder(_Stack):
    """A stack of ``num_layers`` causal :class:`TransformerBlock` s, optionally with
    cross-attention to an encoder's output; supports KV-cache decoding.

    Keyword options other than ``pre_norm``, ``norm`` and ``cross_attention`` are passed to
    every block (see :class:`TransformerBlock`).
    """

    def __init__(
        self,
        num_layers: int,
        features: int,
        num_heads: int,
        mlp_features: int,
        *,
        cross_attention: bool = False,
        pre_norm: bool = True,
        norm: str = "layer_norm",
        rngs: nnx.Rngs,
        **block_options: Any,
    ):
        if "causal" in block_options:
            raise ValueError("TransformerDecoder is always causal; do not pass 'causal'")
        super().__init__(
            num_layers,
            features,
            num_heads,
            mlp_features,
            pre_norm=pre_norm,
            norm=norm,
            rngs=rngs,
            causal=True,
            cross_attention=cross_attention,
            **block_options,
        )

    def __call__(
        self,
        x: Array,
        *,
        mask: masks.Mask | Array | None = None,
        context: Array | None = None,
        context_mask: masks.Mask | Array | None = None,
        positions: Array | None = None,
        deterministic: bool | None = None,
        decode: bool = False,
        prompt_lengths: Array | None = None,
    ) -> Array:
        """``x [B, T, D] -> [B, T, D]``; arguments as in :meth:`TransformerBlock.__call__`.

        The causal mask is always applied (combined with ``mask`` by ``&``). With
        ``decode=True`` (after :meth:`init_cache`) each call appends ``T_new`` tokens per
        example to every layer's cache.
        """
        return self._run(
            x,
            mask=mask,
            context=context,
            context_mask=context_mask,
            positions=positions,
            deterministic=deterministic,
            decode=decode,
            prompt_lengths=prompt_lengths,
        )

    def init_cache(self, batch_size: int, max_length: int, dtype: Any = None) -> None:
        """Create every layer's self-attention KV cache (``batch_size`` x ``max_length``)."""
        for layer in self.layers:
            layer.init_cache(batch_size, max_length, dtype)
