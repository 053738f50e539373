"""Move multi-head attention parameters between flax and :class:`attn.nn.MultiHeadAttention`.

flax (``nnx.MultiHeadAttention`` and linen's ``MultiHeadDotProductAttention``) projects with
``LinearGeneral`` kernels ``[in, heads, head_dim]`` (biases ``[heads, head_dim]``) and an output
kernel ``[heads, head_dim, out]``; ours are ``nnx.Linear`` kernels ``[in, heads * head_dim]``
and ``[heads * head_dim, out]`` with head ``n`` at columns ``n * head_dim ...``, which is the
same memory order, so conversion is a reshape. flax's qk LayerNorm scales (``normalize_qk``)
keep their names ``query_ln`` and ``key_ln``.

Parameters travel as pure dicts, the form checkpoints hold: flax nnx's
``nnx.to_pure_dict(nnx.state(module, nnx.Param))`` (:func:`params`) or linen's
``variables["params"]``::

    ours = MultiHeadAttention(in_features=D, num_heads=N, use_bias=True, rngs=nnx.Rngs(0))
    load(ours, from_flax(params(flax_module)))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
from flax import nnx

__all__ = ["from_flax", "load", "params", "to_flax"]

_PROJECTIONS = ("query", "key", "value")
_NORMS = ("query_ln", "key_ln")


def params(module: nnx.Module) -> dict[str, Any]:
    """A module's ``nnx.Param`` values as a pure nested dict."""
    return nnx.to_pure_dict(nnx.state(module, nnx.Param))


def load(module: nnx.Module, values: Mapping[str, Any]) -> None:
    """Set a module's parameters from a pure nested dict with its structure and shapes."""
    state = nnx.state(module, nnx.Param)
    nnx.replace_by_pure_dict(state, values)
    nnx.update(module, state)


def _check_keys(values: Mapping[str, Any], where: str) -> None:
    known = {*_PROJECTIONS, "out", *_NORMS}
    unknown = sorted(set(values) - known)
    if unknown or not set(_PROJECTIONS) | {"out"} <= set(values):
        raise ValueError(
            f"{where}: expected the parameters {sorted(known)} (query_ln, key_ln optional), got "
            f"{sorted(values)}; {unknown or 'missing'} have no counterpart"
        )


def from_flax(values: Mapping[str, Any]) -> dict[str, Any]:
    """flax multi-head attention parameters -> :class:`attn.nn.MultiHeadAttention`'s (a pure
    dict for :func:`load`)."""
    _check_keys(values, "from_flax")
    converted: dict[str, Any] = {}
    for name in _PROJECTIONS:
        kernel = values[name]["kernel"]  # [in, heads, head_dim]
        converted[name] = {"kernel": kernel.reshape(kernel.shape[0], -1)}
        if "bias" in values[name]:
            converted[name]["bias"] = values[name]["bias"].reshape(-1)
    kernel = values["out"]["kernel"]  # [heads, head_dim, out]
    converted["out"] = {"kernel": kernel.reshape(-1, kernel.shape[-1]), **_bias(values["out"])}
    converted.update({name: dict(values[name]) for name in _NORMS if name in values})
    return converted


def to_flax(values: Mapping[str, Any], *, num_heads: int) -> dict[str, Any]:
    """:class:`attn.nn.MultiHeadAttention` parameters (``num_heads`` query heads) -> flax's
    (``nnx.MultiHeadAttention`` or linen's ``MultiHeadDotProductAttention``). RMS qk-norm
    (``qk_norm``), T5 tables and variant parameters have no flax counterpart and raise."""
    _check_keys(values, "to_flax")
    out_kernel = values["out"]["kernel"]  # [heads * head_dim, out]
    head_dim = out_kernel.shape[0] // num_heads
    converted: dict[str, Any] = {}
    for name in _PROJECTIONS:
        kernel = values[name]["kernel"]  # [in, heads * head_dim]
        converted[name] = {"kernel": kernel.reshape(kernel.shape[0], -1, head_dim)}
        if "bias" in values[name]:
            converted[name]["bias"] = values[name]["bias"].reshape(-1, head_dim)
    converted["out"] = {
        "kernel": out_kernel.reshape(num_heads, head_dim, out_kernel.shape[-1]),
        **_bias(values["out"]),
    }
    converted.update({name: dict(values[name]) for name in _NORMS if name in values})
    return converted


def _bias(projection: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    return {"bias": projection["bias"]} if "bias" in projection else {}
