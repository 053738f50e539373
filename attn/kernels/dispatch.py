"""Which implementation runs an attend call, and the chunked kernel behind attend's API.

Every implementation answers ``unsupported(request) -> reason | None``. An explicit choice that
cannot honour a request raises ``ValueError`` naming the reason; ``"auto"`` takes the first
implementation without one, in order of expected speed for the backend and shape, and falls
back to ``"dense"``, which runs every combination.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from attn.kernels import jax_nn, plan
from attn.kernels.chunked import chunked_attention
from attn.kernels.pallas import pallas_attention
from attn.kernels.request import Request

__all__ = ["IMPLEMENTATIONS", "choose", "run_tiled", "unsupported"]

IMPLEMENTATIONS = ("auto", "dense", "chunked", "cudnn", "pallas")

# attend's chunked tiles: 512 queries x 256 keys measured fastest on XLA:CPU (BUILD_NOTES.md).
Q_TILE, KV_TILE = 512, 256
# Pallas tiles: GPU-sized blocks (a program's tile lives in registers and shared memory).
PALLAS_TILE = 64
# From this many logits per head (T * S), "auto" prefers chunked to dense on CPU and TPU: below
# it the [T, S] scores fit in cache and dense attention runs at full speed.
CHUNKED_MIN_LOGITS = 512 * 512


def _tiled_unsupported(request: Request) -> str | None:
    """Why the tiled kernels (chunked, Pallas) cannot run ``request``."""
    if request.dropout_rate > 0:
        return "apply dropout (use implementation='dense')"
    if request.return_weights:
        return "return weights: it never builds them (use implementation='dense')"
    if not plan.foldable(request.score):
        return (
            f"compute score {plan.describe(request.score)} (it folds dot, scaled_dot, cosine and "
            "general into q and k; use implementation='dense')"
        )
    if plan.recognize_weighting(request.weighting) is None:
        return (
            f"apply weighting {plan.describe(request.weighting)} (it runs softmax, "
            "softmax_with_sink, sigmoid, relu and squared_relu; use implementation='dense')"
        )
    if request.bias is not None and not request.bias_is_rule:
        return (
            "take a dense bias array: pass an elementwise rule (b, h, q_idx, kv_idx) -> float "
            "such as attn.positional.alibi_rule(...), or use implementation='dense'"
        )
    return None


def unsupported(implementation: str, request: Request) -> str | None:
    """Why ``implementation`` cannot run ``request`` on the default backend (``None`` if it can)."""
    if implementation in ("chunked", "pallas"):
        return _tiled_unsupported(request)
    if implementation == "cudnn":
        return jax_nn.unsupported(request, backend=jax.default_backend())
    return None


def choose(request: Request) -> str:
    """The implementation ``"auto"`` runs: cuDNN on GPU where it applies, chunked for long
    sequences where it applies, dense otherwise."""
    if jax.default_backend() == "gpu" and unsupported("cudnn", request) is None:
        return "cudnn"
    _, _, T, S = request.shape
    # Pallas stays opt-in until its compiled (non-interpreted) form is measured on a GPU.
    if T * S >= CHUNKED_MIN_LOGITS and unsupported("chunked", request) is None:
        return "chunked"
    return "dense"


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["rule", "inverse_temperature"], meta_fields=[]
)
@dataclasses.dataclass(frozen=True)
class _Tempered:
    """A bias rule divided by the softmax temperature of its query row."""

    rule: Any
    inverse_temperature: jax.Array  # [B, N, T]

    def __call__(self, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> jax.Array:
        return self.rule(b, h, q_idx, kv_idx) * self.inverse_temperature[b, h, q_idx]


def run_tiled(implementation: str, request: Request) -> jax.Array | tuple[jax.Array, jax.Array]:
    """``request`` through :func:`attn.kernels.chunked_attention` (tiles ``Q_TILE`` x
    ``KV_TILE``) or :func:`attn.kernels.pallas_attention` (``PALLAS_TILE``): the score is folded
    into q and k, a softmax temperature into q and the bias rule."""
    reason = _tiled_unsupported(request)
    if reason is not None:
        raise ValueError(f"implementation={implementation!r} cannot {reason}")
    q, k = plan.fold_score(request.score, request.q, request.k)
    weighting = plan.recognize_weighting(request.weighting)
    bias = request.bias
    if weighting.kind == "softmax":
        inverse = plan.inverse_temperature(weighting.temperature, request.shape)
        if inverse is not None:
            q = (q * inverse.transpose(0, 2, 1, 3)).astype(q.dtype)  # [B, T, N, 1] rows
            if bias is not None:
                bias = _Tempered(bias, jnp.broadcast_to(inverse[..., 0], request.shape[:3]))
    if implementation == "pallas":
        fn = functools.partial(pallas_attention, q_tile=PALLAS_TILE, kv_tile=PALLAS_TILE)
    else:
        fn = functools.partial(chunked_attention, q_tile=Q_TILE, kv_tile=KV_TILE)
    return fn(
        q,
        k,
        request.v,
        mask=request.mask,
        bias=bias,
        weighting=weighting.kind,
        weighting_param=weighting.param,
        return_lse=request.return_lse,
    )
