"""Multi-head attention as an NNX module: projections, optional qk-norm and RoPE, KV cache.

The attention itself is :func:`attn.attend`; this module owns the parameters and the cache.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import attn
from attn import masks
from attn.batch_axes import BatchAxes
from attn.kernels.request import concrete
from attn.nn.dropout import Dropout, maybe_active
from attn.nn.sharding import FSDP, fsdp_axes

__all__ = ["POSITIONALS", "MultiHeadAttention"]

Array = jax.Array
Initializer = Callable[..., Array]

# Position schemes a model may name. "rope" acts on q and k, "alibi" and "t5" are bias rules
# (_BIAS_SCHEMES); "sinusoidal" and "learned" are added to the inputs, outside attention.
POSITIONALS = ("none", "sinusoidal", "learned", "rope", "alibi", "t5")
_BIAS_SCHEMES = ("alibi", "t5")
T5_BUCKETS, T5_MAX_DISTANCE = 32, 128  # T5's own settings


def check_features(
    x: Any, name: str, features: int, batch_shape: tuple[int, ...] | None = None
) -> None:
    """Raise ``ValueError`` unless ``x`` is an array ``[..., length, features]`` (with leading
    axes ``batch_shape`` when given)."""
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) < 2 or shape[-1] != features:
        raise ValueError(
            f"{name} must be [B, length, {features}] (or [..., length, {features}]), got {shape}"
        )
    if batch_shape is not None and tuple(shape[:-2]) != batch_shape:
        raise ValueError(f"{name} has batch axes {tuple(shape[:-2])}, expected {batch_shape}")


def _keys_and_values(inputs_k: Any, inputs_v: Any, inputs_kv: Any) -> tuple[Any, Any]:
    """flax's rule: ``inputs_v`` defaults to ``inputs_k``, both to ``None`` (self-attention);
    ``inputs_kv`` is one input for both."""
    if inputs_kv is not None:
        if inputs_k is not None or inputs_v is not None:
            raise ValueError("give inputs_kv, or inputs_k (and inputs_v), not both")
        inputs_k = inputs_kv
    if inputs_k is None and inputs_v is not None:
        raise ValueError("inputs_v needs inputs_k (self-attention takes neither)")
    return inputs_k, inputs_k if inputs_v is None else inputs_v


def _boolean(mask: Any) -> Any:
    """A mask; flax's float 0/1 mask arrays (``nnx.make_attention_mask``) as booleans."""
    if isinstance(mask, masks.Mask) or mask.dtype == bool:
        return mask
    return (np if isinstance(mask, np.ndarray) else jnp).not_equal(mask, 0)


def _one_of(ours: Any, flax_name_value: Any, name: str, flax_name: str, default: Any) -> Any:
    """An argument that has our name and flax's: either, equal if both, else ``default``."""
    if ours is not None and flax_name_value is not None and ours != flax_name_value:
        raise ValueError(
            f"MultiHeadAttention: {name}={ours} and {flax_name}={flax_name_value} disagree"
        )
    return next((x for x in (ours, flax_name_value) if x is not None), default)


def _head_dim(head_dim: Any, qkv_features: Any, in_features: int, num_heads: int) -> int:
    """``head_dim``, or flax's ``qkv_features // num_heads`` (``in_features`` by default)."""
    features = in_features if qkv_features is None else _positive_int(qkv_features, "qkv_features")
    if features % num_heads and (head_dim is None or qkv_features is not None):
        name = "in_features" if qkv_features is None else "qkv_features"
        # flax's positional order is (num_heads, in_features): swapped arguments land here.
        swapped = num_heads > features and qkv_features is None
        hint = (
            " (flax's order is (num_heads, in_features): pass both by keyword)" if swapped else ""
        )
        raise ValueError(
            f"MultiHeadAttention: {name}={features} is not divisible by num_heads={num_heads}; "
            f"pass head_dim{hint}"
        )
    derived = None if qkv_features is None else qkv_features // num_heads
    return _positive_int(
        _one_of(head_dim, derived, "head_dim", "qkv_features // num_heads", features // num_heads),
        "head_dim",
    )


def _initializers(kernel_init: Any, bias_init: Any) -> dict[str, Any]:
    """The initializers given (``nnx.Linear``'s own defaults for the others)."""
    given = {"kernel_init": kernel_init, "bias_init": bias_init}
    return {name: init for name, init in given.items() if init is not None}


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["inner", "offsets"], meta_fields=[]
)
@dataclasses.dataclass(frozen=True, eq=False)
class _AtAbsolutePositions(masks.Mask):
    """``inner`` evaluated with query ``i`` of example ``b`` at position ``offsets[b] + i``, so a
    Mask written for the whole sequence also holds for a chunk decoded after a cache prefix."""

    inner: masks.Mask
    offsets: Array  # [B] int

    def rule(self, b, h, q_idx, kv_idx):
        return self.inner.rule(b, h, q_idx + self.offsets[b], kv_idx)


def _deprecated_spellings(
    positional: str, variant: Any, use_rope: bool | None, attention: Any
) -> tuple[str, Any]:
    """``positional`` and ``variant``, honouring their older names ``use_rope`` and
    ``attention`` (with a DeprecationWarning)."""
    if use_rope is not None:
        warnings.warn(
            "MultiHeadAttention(use_rope=...) is deprecated; use positional='rope'",
            DeprecationWarning,
            stacklevel=3,
        )
        if use_rope:
            positional = "rope"
    if attention is not None:
        warnings.warn(
            "MultiHeadAttention(attention=...) is deprecated; use variant=...",
            DeprecationWarning,
            stacklevel=3,
        )
        variant = attention
    return positional, variant


def _raise_overflow(end_b: np.ndarray, max_length: int) -> None:
    """Host side of the KV-cache overflow check under ``jit`` (see ``_check_decode``)."""
    raise ValueError(
        f"decode: KV cache overflow: the cache holds max_length={max_length} tokens, these "
        f"inputs would end at positions {np.asarray(end_b).tolist()}"
    )


def _positive_int(value: Any, name: str) -> int:
    if not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"MultiHeadAttention: {name} must be a positive int, got {value!r}")
    return int(value)


class MultiHeadAttention(nnx.Module):
    """Multi-head attention with grouped-query heads, RoPE, qk-norm and a KV cache.

    Projects ``inputs_q [B, T, in_features]`` to ``num_heads`` queries and ``inputs_k``,
    ``inputs_v [B, S, kv_features]`` (default: ``inputs_q``, self-attention) to
    ``num_kv_heads`` keys and values of ``head_dim`` features, runs :func:`attn.attend` on q
    ``[B, T, N, H]``, k, v ``[B, S, K, H]`` and projects the heads back to ``out_features``.
    ``num_kv_heads < num_heads`` is grouped-query attention (``1`` is multi-query); keys and
    values are never repeated. Inputs may also be ``[T, D]`` or ``[..., T, D]``.

    It takes what flax's ``nnx.MultiHeadAttention`` takes, under the same names where the
    meaning is the same (``qkv_features``, ``in_kv_features``, ``kernel_init``, ``bias_init``,
    ``out_kernel_init``, ``out_bias_init``, ``precision``, ``normalize_qk``,
    ``broadcast_dropout``, ``keep_rngs``, ``decode``; in the call ``inputs_k``, ``inputs_v``,
    ``rngs``, ``sow_weights``, ``is_causal``, ``out_sharding``). flax's signature starts
    ``(num_heads, in_features, ...)`` and ours ``(in_features, num_heads, ...)``, so the switch
    is one line when both are passed by keyword. Defaults that differ: ``use_bias`` (flax
    True, here False), ``broadcast_dropout`` (flax True, here False) and ``deterministic``
    (flax None, here False). :mod:`attn.nn.convert` moves flax's parameters over and back.

    Args:
      in_features: features ``D`` of ``inputs_q``.
      num_heads: query heads ``N``.
      num_kv_heads: key/value heads ``K`` (default ``N``); ``N % K == 0``.
      head_dim: features per head ``H`` (default ``qkv_features // num_heads``).
      qkv_features: ``N * H`` (flax's way to give the head size; default ``in_features``).
      kv_features: features of ``inputs_k`` and ``inputs_v`` (default ``in_features``);
        ``in_kv_features`` is flax's name for it.
      out_features: output features (default ``in_features``).
      score: ``(q, k) -> logits`` or a catalog name (see :mod:`attn.catalog`).
      weighting: ``(logits, mask) -> weights`` or a catalog name.
      mask: a mask applied on every call, ``&`` the call's own: an :class:`attn.masks.Mask`
        or a catalog ``"mask"`` spec such as ``"sliding_window(64)"``. Like a call's Mask it
        holds at absolute positions while decoding.
      positional: the position scheme (one of :data:`POSITIONALS`). Inside attention
        ``"rope"`` rotates q and k by their positions (:func:`attn.positional.rope`),
        ``"alibi"`` adds :func:`attn.positional.alibi_rule` and ``"t5"`` a learned T5 relative
        bias (:func:`attn.positional.t5_relative_rule`, a ``[32, N]`` table, bidirectional
        buckets up to distance 128) as bias *rules*, so every implementation (the chunked
        kernel included) evaluates them where it needs them; ``"sinusoidal"``, ``"learned"``
        and ``"none"`` add nothing here (absolute positions belong to the inputs).
      use_bias: biases in the four projections.
      kernel_init, bias_init: initializers of the q, k, v projections (``nnx.Linear``'s
        defaults); ``out_kernel_init``, ``out_bias_init`` of the output projection (default:
        the former).
      precision: ``jax.lax.Precision`` of the projections and of attention's matmuls.
      rope_base, rotary_dim: RoPE frequency base and number of rotated features (default all).
      qk_norm: RMS-normalise q and k over ``head_dim`` (before RoPE), one scale each.
      normalize_qk: LayerNorm q and k over ``head_dim`` (scale, no bias; flax's qk-norm, as
        in ViT-22B); parameters ``query_ln`` and ``key_ln`` as in flax.
      logits_soft_cap: ``cap * tanh(logits / cap)`` (see :func:`attn.attend`).
      dropout_rate: attention-weight dropout, a number or a scalar array (maybe traced, e.g.
        vmapped over a sweep's trials); draws keys from the ``"dropout"`` stream of ``rngs``
        (which falls back to ``"default"``) or from the call's ``rngs``.
      broadcast_dropout: one dropout mask ``[T, S]`` for every example and head (flax's).
      keep_rngs: keep a dropout stream from ``rngs``; with ``False`` every call that drops
        passes ``rngs``.
      record_weights: sow the weights ``[B, N, T, S]`` as ``nnx.Intermediate``
        ``"attention_weights"``; read them with ``nnx.capture(model, nnx.Intermediate)``.
        Off by default, and then the weights are not even returned by ``attend``. The call's
        ``sow_weights=True`` (flax's name) does the same for one call.
      deterministic: default for the call argument of the same name (dropout off when True;
        ``None``, flax's default: a call that may drop must then say it);
        ``model.eval()`` / ``model.train()`` and ``nnx.view`` set it.
      decode: default for the call argument of the same name.
      implementation: passed to :func:`attn.attend`.
      variant: a whole-attention function ``(q, k, v, *, mask) -> out`` used instead of
        :func:`attn.attend`, or a catalog ``"attention"`` spec such as ``"linear"`` or
        ``"performer(num_features=128)"`` or ``"linformer(projected_length=64,
        max_length=512)"`` (see :mod:`attn.variants`; a variant's learned parameters,
        such as Linformer's projection, become parameters of this module). It takes the
        place of ``score`` and ``weighting``, so those must keep their defaults, and it takes
        no bias or attention dropout and records no weights (there is no weight matrix).
        KV-cache decoding attends over the cache slots exactly, O(L) per new token.
      dtype: computation dtype of the projections (default: inferred from inputs and params).
      param_dtype: parameter dtype.
      rngs: ``nnx.Rngs`` with a ``"params"`` stream (and ``"dropout"`` if ``dropout_rate > 0``).
      use_rope, attention: deprecated spellings of ``positional="rope"`` and ``variant``.

    KV-cache decoding: call :meth:`init_cache` once, then call with ``decode=True`` on chunks
    ``[B, T_new, D]`` (a prompt, then one token at a time). See :meth:`__call__`.
    """

    def __init__(
        self,
        in_features: int,
        num_heads: int,
        *,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        qkv_features: int | None = None,
        kv_features: int | None = None,
        in_kv_features: int | None = None,
        out_features: int | None = None,
        score: Callable[..., Array] | str = "scaled_dot",
        weighting: Callable[..., Array] | str = "softmax",
        mask: masks.Mask | str | None = None,
        positional: str = "none",
        use_bias: bool = False,
        kernel_init: Initializer | None = None,
        bias_init: Initializer | None = None,
        out_kernel_init: Initializer | None = None,
        out_bias_init: Initializer | None = None,
        precision: Any = None,
        rope_base: float = 10000.0,
        rotary_dim: int | None = None,
        qk_norm: bool = False,
        normalize_qk: bool = False,
        logits_soft_cap: float | None = None,
        dropout_rate: float | Array = 0.0,
        broadcast_dropout: bool = False,
        keep_rngs: bool = True,
        record_weights: bool = False,
        deterministic: bool | None = False,
        decode: bool = False,
        implementation: str = "auto",
        variant: Callable[..., Array] | str | None = None,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
        use_rope: bool | None = None,
        attention: Callable[..., Array] | str | None = None,
    ):
        positional, variant = _deprecated_spellings(positional, variant, use_rope, attention)
        in_features = _positive_int(in_features, "in_features")
        num_heads = _positive_int(num_heads, "num_heads")
        num_kv_heads = _positive_int(
            num_heads if num_kv_heads is None else num_kv_heads, "num_kv_heads"
        )
        if num_heads % num_kv_heads:
            raise ValueError(
                f"MultiHeadAttention: num_heads={num_heads} must be a multiple of "
                f"num_kv_heads={num_kv_heads}"
            )
        head_dim = _head_dim(head_dim, qkv_features, in_features, num_heads)
        kv_features = _positive_int(
            _one_of(kv_features, in_kv_features, "kv_features", "in_kv_features", in_features),
            "kv_features",
        )
        out_features = _positive_int(
            in_features if out_features is None else out_features, "out_features"
        )
        if positional not in POSITIONALS:
            raise ValueError(
                f"MultiHeadAttention: positional={positional!r} is not one of {POSITIONALS}"
            )
        if positional == "rope" and rotary_dim is not None and not (0 < rotary_dim <= head_dim):
            raise ValueError(
                f"MultiHeadAttention: rotary_dim={rotary_dim} must be in (0, head_dim={head_dim}]"
            )
        rate = concrete(dropout_rate)
        if rate is not None and not (rate.shape == () and 0.0 <= rate < 1.0):
            raise ValueError(
                f"MultiHeadAttention: dropout_rate must be in [0, 1), got {dropout_rate}"
            )
        if qk_norm and normalize_qk:
            raise ValueError(
                "MultiHeadAttention: qk_norm (RMSNorm) and normalize_qk (flax's LayerNorm) are "
                "two kinds of qk-norm; choose one"
            )

        self.in_features = in_features
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.kv_features = kv_features
        self.out_features = out_features
        # Resolve names now so that a typo fails at construction, not at the first call.
        self.score = attn.catalog.get("score", score)
        self.weighting = attn.catalog.get("weighting", weighting)
        self.mask = None if mask is None else attn.catalog.get("mask", mask)
        self.positional = positional
        self.rope_base = rope_base
        self.rotary_dim = rotary_dim
        self.precision = precision
        self.logits_soft_cap = logits_soft_cap
        self.broadcast_dropout = broadcast_dropout
        self.record_weights = record_weights
        self.deterministic = deterministic
        self.decode = decode
        self.implementation = implementation
        self.variant = None if variant is None else attn.catalog.get("attention", variant)
        if self.variant is not None:
            defaults = {"score": attn.scores.scaled_dot, "weighting": attn.weighting.softmax}
            for name, default in defaults.items():
                if getattr(self, name) is not default:
                    raise ValueError(
                        f"MultiHeadAttention: variant={variant!r} replaces {name}; "
                        f"leave {name} at its default"
                    )
            if maybe_active(dropout_rate) or record_weights or positional in _BIAS_SCHEMES:
                raise ValueError(
                    f"MultiHeadAttention: variant={variant!r} supports no attention dropout, "
                    f"no recorded weights and no position bias (positional={positional!r})"
                )
        # A variant's learned parameters (Linformer's projection) become attributes
        # ``variant_<name>`` and are passed to it by name.
        init_params = getattr(self.variant, "init_params", None)
        params = {} if init_params is None else init_params(rngs.params())
        self.variant_param_names = tuple(params)
        for name, value in params.items():
            setattr(self, f"variant_{name}", nnx.Param(value.astype(param_dtype)))
        if positional == "t5":
            # T5 starts its relative bias at zero: attention is position-blind until it learns.
            self.t5_table = nnx.Param(jnp.zeros((T5_BUCKETS, num_heads), param_dtype))
        else:
            self.t5_table = nnx.data(None)

        inits = _initializers(kernel_init, bias_init)
        out_inits = _initializers(out_kernel_init or kernel_init, out_bias_init or bias_init)
        linear = functools.partial(
            nnx.Linear,
            use_bias=use_bias,
            dtype=dtype,
            param_dtype=param_dtype,
            precision=precision,
            rngs=rngs,
        )
        # Fully sharded data parallelism splits every kernel along the model's feature axis.
        into_heads, out_of_heads = fsdp_axes(FSDP, None), fsdp_axes(None, FSDP)
        self.query = linear(in_features, num_heads * head_dim, kernel_metadata=into_heads, **inits)
        self.key = linear(kv_features, num_kv_heads * head_dim, kernel_metadata=into_heads, **inits)
        self.value = linear(
            kv_features, num_kv_heads * head_dim, kernel_metadata=into_heads, **inits
        )
        self.out = linear(
            num_heads * head_dim, out_features, kernel_metadata=out_of_heads, **out_inits
        )
        norms = {"query_norm": None, "key_norm": None, "query_ln": None, "key_ln": None}
        if qk_norm:
            norm = functools.partial(nnx.RMSNorm, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            norms.update(query_norm=norm(head_dim), key_norm=norm(head_dim))
        if normalize_qk:
            norm = functools.partial(
                nnx.LayerNorm, use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs
            )
            norms.update(query_ln=norm(head_dim), key_ln=norm(head_dim))
        for name, module in norms.items():
            setattr(self, name, nnx.data(None) if module is None else module)
        self.dropout = Dropout(
            dropout_rate, rngs=rngs if keep_rngs and maybe_active(dropout_rate) else None
        )
        self.cached_key = nnx.data(None)
        self.cached_value = nnx.data(None)
        self.cache_index = nnx.data(None)

    @property
    def dropout_rate(self) -> float | Array:
        return self.dropout.rate

    def set_view(self, deterministic: bool | None = None, record_weights: bool | None = None):
        """Used by ``nnx.view(model, deterministic=..., record_weights=...)``."""
        if deterministic is not None:
            self.deterministic = deterministic
        if record_weights is not None:
            self.record_weights = record_weights

    def init_cache(self, batch_size: int, max_length: int, dtype: Any = None) -> None:
        """Create an empty KV cache for ``batch_size`` sequences of up to ``max_length`` tokens.

        Creates ``nnx.Cache`` variables ``cached_key [B, L, K, H]``, ``cached_value [B, L, K, H]``
        (``dtype``, default the projections' dtype or float32) and ``cache_index [B]`` int32, the
        next free slot of each example (all 0). Calling it again resets the cache.
        """
        batch_size = _positive_int(batch_size, "batch_size")
        max_length = _positive_int(max_length, "max_length")
        if dtype is None:
            dtype = self.key.dtype or jnp.float32
        shape = (batch_size, max_length, self.num_kv_heads, self.head_dim)
        self.cached_key = nnx.Cache(jnp.zeros(shape, dtype))
        self.cached_value = nnx.Cache(jnp.zeros(shape, dtype))
        self.cache_index = nnx.Cache(jnp.zeros((batch_size,), jnp.int32))

    def _heads(self, x: Array, projection: nnx.Linear, num_heads: int) -> Array:
        B, length, _ = x.shape
        return projection(x).reshape(B, length, num_heads, self.head_dim)

    def _rope(self, x: Array, positions: Array) -> Array:
        return attn.positional.rope(x, positions, base=self.rope_base, rotary_dim=self.rotary_dim)

    def __call__(
        self,
        inputs_q: Array,
        inputs_k: Array | None = None,
        inputs_v: Array | None = None,
        *,
        inputs_kv: Array | None = None,
        mask: masks.Mask | Array | None = None,
        bias: Array | None = None,
        positions: Array | None = None,
        kv_positions: Array | None = None,
        deterministic: bool | None = None,
        rngs: nnx.Rngs | nnx.RngStream | Array | None = None,
        sow_weights: bool = False,
        decode: bool | None = None,
        is_causal: bool = False,
        prompt_lengths: Array | None = None,
        out_sharding: Any = None,
    ) -> Array:
        """Attend from ``inputs_q [B, T, D]`` to keys from ``inputs_k`` and values from
        ``inputs_v`` ``[B, S, Dkv]`` (default: ``inputs_q`` itself; ``inputs_v`` defaults to
        ``inputs_k``, as in flax).

        Args:
          inputs_q: ``[B, T, in_features]``; also ``[T, in_features]`` or ``[..., T,
            in_features]`` (leading axes flattened, row-major, into ``B`` for masks, positions
            and the cache; restored on the output).
          inputs_k: ``[B, S, kv_features]``; ``None`` for self-attention.
          inputs_v: ``[B, S, kv_features]``; ``None``: ``inputs_k``.
          inputs_kv: keys and values from one input (our older name; linen's too).
          mask: :class:`attn.masks.Mask` or bool array broadcastable to ``[B, N, T, S]``
            (``True`` = may attend; flax's float 0/1 masks from ``make_attention_mask`` count
            as bool; leading axes as ``inputs_q``'s). With ``decode=True`` it is combined with
            the cache's causal mask by ``&``; the key axis is then the ``L`` cache slots, and a
            Mask sees each query at its absolute position ``cache_index[b] + i`` (so
            ``sliding_window(64)`` means the same in a full forward and in decoding), while a
            bool array must be ``[B, N, T_new, L]`` (or broadcastable).
          bias: float array broadcastable to ``[B, N, T, S]`` added to the logits.
          positions: RoPE positions of the queries, ``[T]`` or ``[B, T]`` (default
            ``arange(T)``, or each example's cache positions when decoding).
          kv_positions: RoPE positions of the keys (default: ``positions`` for self-attention,
            ``arange(S)`` for cross-attention; ignored when decoding: keys share the queries').
          deterministic: disable dropout (default: ``self.deterministic``).
          rngs: this call's dropout key: a key, an ``nnx.RngStream`` or ``nnx.Rngs`` (its
            ``"dropout"`` stream); default the module's own stream.
          sow_weights: sow this call's weights as with ``record_weights`` (flax's name).
          decode: write the new keys/values into the cache (after :meth:`init_cache`) at each
            example's ``cache_index`` and attend over all ``L`` slots with
            ``attn.masks.causal(offset=cache_index)``, so query ``i`` at absolute position
            ``cache_index[b] + i`` sees the slots up to itself. ``T_new >= 1`` tokens per call.
            Default ``self.decode``; inputs ``[B, T_new, D]``.
          is_causal: add ``attn.masks.causal()`` (decoding is causal already).
          prompt_lengths: decode only: int ``[B]``, how many of the ``T_new`` inputs of each
            example are real (the rest is right padding); each example's ``cache_index``
            advances by its own count (default ``T_new``). Use it to prefill ragged prompts in
            one call: the padding slots are masked and overwritten by the next tokens, whose
            outputs then match an unpadded run. (``cache_index`` is a plain ``nnx.Cache`` and
            may also be set directly.)
          out_sharding: passed to the output projection (``nnx.Linear``).

        Returns:
          ``[B, T, out_features]`` (``inputs_q``'s leading axes). Queries that may see no key
          output the projection of 0 (the output bias, if any).
        """
        inputs_k, inputs_v = _keys_and_values(inputs_k, inputs_v, inputs_kv)
        check_features(inputs_q, "inputs_q", self.in_features)
        if inputs_k is None and self.kv_features != self.in_features:
            raise ValueError(
                f"self-attention projects inputs_q to keys, but kv_features={self.kv_features} "
                f"differs from in_features={self.in_features}: pass inputs_k"
            )
        batch = BatchAxes(tuple(inputs_q.shape[:-2]))
        for name, x in (("inputs_k", inputs_k), ("inputs_v", inputs_v)):
            if x is not None:
                check_features(x, name, self.kv_features, batch.shape)
        if inputs_k is not None and inputs_v.shape[-2] != inputs_k.shape[-2]:
            raise ValueError(
                f"inputs_k {inputs_k.shape} and inputs_v {inputs_v.shape} differ in length"
            )
        decode = self.decode if decode is None else decode
        if decode and len(batch.shape) != 1:
            raise ValueError(f"decode needs inputs [B, T_new, D], got {inputs_q.shape}")
        if mask is not None and not isinstance(mask, masks.Mask):
            mask = batch.flatten_pairs(_boolean(mask), "mask")
        if is_causal and not decode:  # the cache's own mask is causal
            mask = masks.causal() if mask is None else masks.causal() & mask
        if bias is not None:
            bias = batch.flatten_pairs(bias, "bias")
        out = self._attend(
            *(None if x is None else batch.flatten(x) for x in (inputs_q, inputs_k, inputs_v)),
            mask=mask,
            bias=bias,
            positions=positions,
            kv_positions=kv_positions,
            deterministic=self.deterministic if deterministic is None else deterministic,
            rngs=rngs,
            record_weights=self.record_weights or sow_weights,
            decode=decode,
            prompt_lengths=prompt_lengths,
        )
        return batch.restore(self.out(out, out_sharding=out_sharding))

    def _attend(
        self,
        inputs_q: Array,
        inputs_k: Array | None,
        inputs_v: Array | None,
        *,
        mask: masks.Mask | Array | None,
        bias: Array | None,
        positions: Array | None,
        kv_positions: Array | None,
        deterministic: bool | None,
        rngs: Any,
        record_weights: bool,
        decode: bool,
        prompt_lengths: Array | None,
    ) -> Array:
        """:meth:`__call__` on ``[B, T, D]`` inputs, up to the output projection: the heads
        ``[B, T, N * H]``."""
        B, T, _ = inputs_q.shape
        self_attention = inputs_k is None
        if self_attention:
            inputs_k = inputs_v = inputs_q
        if bias is not None and (self.variant is not None or self.positional in _BIAS_SCHEMES):
            raise ValueError(
                "MultiHeadAttention: bias= cannot be combined with "
                + (
                    f"variant={self.variant}"
                    if self.variant is not None
                    else f"positional={self.positional!r}, which adds its own bias rule"
                )
            )
        if decode:
            advance_b = self._check_decode(B, T, inputs_k, prompt_lengths)
        elif prompt_lengths is not None:
            raise ValueError("prompt_lengths applies only with decode=True")
        if self.mask is not None:
            mask = self.mask if mask is None else self.mask & masks.as_mask(mask)

        q = self._heads(inputs_q, self.query, self.num_heads)
        k = self._heads(inputs_k, self.key, self.num_kv_heads)
        v = self._heads(inputs_v, self.value, self.num_kv_heads)
        for query_norm, key_norm in (
            (self.query_norm, self.key_norm),
            (self.query_ln, self.key_ln),
        ):
            if query_norm is not None:
                q, k = query_norm(q), key_norm(k)
        # Where query 0 sits: 0 in a full forward, each example's next cache slot when decoding.
        q_offset = 0
        if decode:
            q_offset = self.cache_index[...]
            k, v, mask, positions = self._update_cache(k, v, mask, positions, advance_b)
            kv_positions = positions

        if self.positional == "rope":
            if positions is None:
                positions = jnp.arange(T)
            if kv_positions is None:
                kv_positions = positions if self_attention else jnp.arange(k.shape[1])
            q = self._rope(q, positions)
            if not decode:  # cached keys were rotated when they were written
                k = self._rope(k, kv_positions)
        elif self.positional == "alibi":
            bias = attn.positional.alibi_rule(self.num_heads, q_offset=q_offset)
        elif self.positional == "t5":
            bias = attn.positional.t5_relative_rule(
                self.t5_table[...], max_distance=T5_MAX_DISTANCE, q_offset=q_offset
            )

        if self.variant is not None:
            params = {n: getattr(self, f"variant_{n}")[...] for n in self.variant_param_names}
            out_btnh = self.variant(q, k, v, mask=mask, **params)
            return out_btnh.reshape(B, T, self.num_heads * self.head_dim)
        if deterministic is None and maybe_active(self.dropout.rate):
            raise ValueError(
                "MultiHeadAttention: dropout_rate is not 0 and no deterministic was given, in the "
                "call, the constructor or by nnx.view"
            )
        rng = self.dropout.key(deterministic=deterministic, rngs=rngs)
        result = attn.attend(
            q,
            k,
            v,
            score=self.score,
            mask=mask,
            bias=bias,
            weighting=self.weighting,
            dropout_rate=0.0 if rng is None else self.dropout.rate,
            rng=rng,
            broadcast_dropout=self.broadcast_dropout,
            logits_soft_cap=self.logits_soft_cap,
            precision=self.precision,
            # Recorded weights (attention maps, sown weights) are the matrix the tiled kernels
            # never build: that call computes the same attention through dense.
            implementation="dense" if record_weights else self.implementation,
            return_weights=record_weights,
        )
        if record_weights:
            out_btnh, weights_bnts = result
            self.sow(nnx.Intermediate, "attention_weights", weights_bnts)
        else:
            out_btnh = result
        return out_btnh.reshape(B, T, self.num_heads * self.head_dim)

    def _check_decode(
        self, B: int, T_new: int, inputs_k: Array, prompt_lengths: Array | None
    ) -> Array:
        """Validate a decode call before any work; return how far each example advances."""
        if self.cached_key is None:
            raise ValueError(
                "decode=True needs a KV cache: call init_cache(batch_size, max_length) first"
            )
        if inputs_k.shape[1] != T_new:
            raise ValueError(
                f"decode: inputs_k must have the T_new={T_new} tokens of inputs_q, "
                f"got {inputs_k.shape}"
            )
        cache_batch, max_length = self.cached_key.shape[:2]
        if cache_batch != B:
            raise ValueError(
                f"decode: inputs have batch size {B}, the cache was made for {cache_batch}"
            )
        if prompt_lengths is None:
            advance_b = jnp.full((B,), T_new, jnp.int32)
        else:
            advance_b = jnp.asarray(prompt_lengths)
            if advance_b.shape != (B,) or not jnp.issubdtype(advance_b.dtype, jnp.integer):
                raise ValueError(
                    f"prompt_lengths must be an int array [B={B}], got "
                    f"{advance_b.dtype}{list(advance_b.shape)}"
                )
            lengths = concrete(advance_b)
            if lengths is not None and ((lengths < 0) | (lengths > T_new)).any():
                raise ValueError(f"prompt_lengths must be in [0, T_new={T_new}], got {lengths}")
            advance_b = advance_b.astype(jnp.int32)
        end_b = self.cache_index[...] + advance_b
        concrete_end = concrete(end_b)
        if concrete_end is not None:
            if (concrete_end > max_length).any():
                _raise_overflow(concrete_end, max_length)
        else:
            # Under jit the positions are known only on the device: the call fails there (a
            # runtime error carrying the same message) instead of dropping tokens silently. The
            # host is reached only on overflow, so decoding does not wait on it at every step.
            jax.lax.cond(
                (end_b > max_length).any(),
                lambda: jax.debug.callback(_raise_overflow, end_b, max_length),
                lambda: None,
            )
        return advance_b

    def _update_cache(
        self,
        k_new: Array,
        v_new: Array,
        mask: masks.Mask | Array | None,
        positions: Array | None,
        advance_b: Array,
    ) -> tuple[Array, Array, masks.Mask, Array]:
        """Write the new keys/values at each example's position; return the whole cache, the
        mask over its slots and the queries' positions."""
        B, T_new = k_new.shape[:2]
        index_b = self.cache_index[...]
        positions_bt = index_b[:, None] + jnp.arange(T_new, dtype=jnp.int32)
        if positions is None:
            positions = positions_bt
        if self.positional == "rope":
            k_new = self._rope(k_new, positions)
        # Scatter rather than dynamic_update_slice: that would clamp the start of a chunk that
        # runs past the end and overwrite earlier slots; here padding past the end is dropped.
        batch_b1 = jnp.arange(B)[:, None]
        cached_key = self.cached_key[...]
        cached_value = self.cached_value[...]
        cached_key = cached_key.at[batch_b1, positions_bt].set(
            k_new.astype(cached_key.dtype), mode="drop"
        )
        cached_value = cached_value.at[batch_b1, positions_bt].set(
            v_new.astype(cached_value.dtype), mode="drop"
        )
        self.cached_key[...] = cached_key
        self.cached_value[...] = cached_value
        self.cache_index[...] = index_b + advance_b

        cache_mask = masks.causal(offset=index_b)
        if isinstance(mask, masks.Mask):
            mask = _AtAbsolutePositions(mask, index_b)
        mask = cache_mask if mask is None else cache_mask & masks.as_mask(mask)
        return cached_key, cached_value, mask, positions
