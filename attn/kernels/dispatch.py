"""The table of :func:`attn.attend`'s implementations, and how ``"auto"`` picks from it.

Every entry answers ``unsupported(request) -> reason | None`` and computes ``run(request)``. An
explicit choice that cannot honour a request raises ``ValueError`` naming the reason; ``"auto"``
takes the first supported implementation in order of expected speed for the backend and shape
and falls back to ``"dense"``, which runs every combination.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from attn.kernels import dense, fold, jax_nn
from attn.kernels.chunked import chunked_attention
from attn.kernels.pallas import pallas_attention
from attn.kernels.request import Request, concrete
from attn.kernels.ring import layout_problem, ring_attention

__all__ = ["IMPLEMENTATIONS", "NAMES", "Implementation", "choose", "run"]

Result = jax.Array | tuple[jax.Array, ...]

# attend's chunked tiles: 512 queries x 256 keys measured fastest on XLA:CPU (BUILD_NOTES.md).
Q_TILE, KV_TILE = 512, 256
# Pallas tiles: GPU-sized blocks (a program's tile lives in registers and shared memory); the
# size the H200 measurements used. Triton needs >= 16 and a power of 2 (pallas_attention checks).
PALLAS_TILE = 64
# From this many logits per head (T * S), "auto" prefers chunked to dense on CPU and TPU: below
# it the [T, S] scores fit in cache and dense attention runs at full speed.
CHUNKED_MIN_LOGITS = 512 * 512


@dataclasses.dataclass(frozen=True)
class Implementation:
    """One way to compute attend's composition.

    ``unsupported(request)`` says why it cannot run a request (``None`` if it can) and
    ``run(request)`` computes ``out`` and, as the request asks, weights and lse rows.
    """

    unsupported: Callable[[Request], str | None]
    run: Callable[[Request], Result]


def _tiled_unsupported(request: Request) -> str | None:
    """Why the tiled kernels (chunked, Pallas) cannot run ``request``."""
    if request.dropout_active:
        return "apply dropout (use implementation='dense')"
    if request.return_weights:
        return "return weights: it never builds them (use implementation='dense')"
    if not fold.foldable(request.score):
        return (
            f"compute score {fold.describe(request.score)} (it folds dot, scaled_dot, cosine and "
            "general into q and k; use implementation='dense')"
        )
    if fold.recognize_weighting(request.weighting) is None:
        return (
            f"apply weighting {fold.describe(request.weighting)} (it runs softmax, "
            "softmax_with_sink, sigmoid, relu and squared_relu; use implementation='dense')"
        )
    if jnp.dtype(request.logits_dtype) != jnp.float32:
        return (
            f"compute logits in {jnp.dtype(request.logits_dtype).name} (its tiles accumulate in "
            "float32; use implementation='dense')"
        )
    cap = request.logits_soft_cap
    if cap is not None:
        if concrete(cap) is None:
            return "take a traced logits_soft_cap (it builds the cap into the kernel)"
        softmax = fold.recognize_weighting(request.weighting).kind == "softmax"
        if softmax and _temperature(request) is None:
            return (
                "combine logits_soft_cap with a softmax temperature that is an array (it folds "
                "the temperature into a constant cap; use implementation='dense')"
            )
    return None


def _ring_unsupported(request: Request) -> str | None:
    """Why :func:`attn.kernels.ring_attention` cannot run ``request`` (on the ambient mesh)."""
    reason = _tiled_unsupported(request)
    if reason is not None:
        return reason
    weighting = fold.recognize_weighting(request.weighting)
    if weighting.kind != "softmax" or weighting.param is not None:
        return (
            f"apply weighting {fold.describe(request.weighting)} (it merges key blocks by their "
            "log-sum-exp: softmax without a sink; use implementation='chunked')"
        )
    if request.bias is not None and not request.bias_is_rule:
        return (
            "take a bias array (it splits the sequence over devices: give the bias as a rule "
            "(b, h, q_idx, kv_idx) -> float, such as attn.positional.alibi_rule)"
        )
    return layout_problem(request.shape)


def _temperature(request: Request) -> float | None:
    """A recognised softmax's temperature as a Python float (``None`` unless it is one number
    known at trace time)."""
    value = concrete(fold.recognize_weighting(request.weighting).temperature)
    return float(value) if value is not None and value.size == 1 else None


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


def _run_tiled(implementation: str, request: Request) -> Result:
    """``request`` through :func:`attn.kernels.chunked_attention` (tiles ``Q_TILE`` x
    ``KV_TILE``), :func:`attn.kernels.ring_attention` (the same tiles inside each block) or
    :func:`attn.kernels.pallas_attention` (``PALLAS_TILE``): the score is folded
    into q and k, a softmax temperature into q, the bias and the soft cap."""
    q, k = fold.fold_score(request.score, request.q, request.k)
    weighting = fold.recognize_weighting(request.weighting)
    bias, cap = request.bias, request.logits_soft_cap
    if weighting.kind == "softmax":
        inverse = fold.inverse_temperature(weighting.temperature, request.shape)
        if inverse is not None:
            q = (q * inverse.transpose(0, 2, 1, 3)).astype(q.dtype)  # [B, T, N, 1] rows
            if request.bias_is_rule:
                bias = _Tempered(bias, jnp.broadcast_to(inverse[..., 0], request.shape[:3]))
            elif bias is not None:
                bias = bias * inverse.astype(bias.dtype)  # one copy, rare: temperature != 1
            if cap is not None:
                # cap * tanh(x / cap) / t == (cap / t) * tanh((x / t) / (cap / t))
                cap = float(cap) / _temperature(request)
    # Tile sizes are read here, at call time, so that tests can shrink them.
    if implementation == "pallas":
        fn = functools.partial(pallas_attention, q_tile=PALLAS_TILE, kv_tile=PALLAS_TILE)
    elif implementation == "ring":
        fn = functools.partial(ring_attention, q_tile=Q_TILE, kv_tile=KV_TILE)
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
        logits_soft_cap=cap,
        precision=request.precision,
        return_lse=request.return_lse,
    )


IMPLEMENTATIONS: dict[str, Implementation] = {
    "dense": Implementation(unsupported=lambda request: None, run=dense.attention),
    "chunked": Implementation(
        unsupported=_tiled_unsupported, run=functools.partial(_run_tiled, "chunked")
    ),
    # The backend is read per call: the same program may be traced for CPU and GPU.
    "cudnn": Implementation(
        unsupported=lambda request: jax_nn.unsupported(request, backend=jax.default_backend()),
        run=functools.partial(jax_nn.attention, implementation="cudnn"),
    ),
    "pallas": Implementation(
        unsupported=_tiled_unsupported, run=functools.partial(_run_tiled, "pallas")
    ),
    # Context parallelism over the ambient mesh's "context" axis; never chosen by "auto".
    "ring": Implementation(
        unsupported=_ring_unsupported, run=functools.partial(_run_tiled, "ring")
    ),
}
# The values attend(implementation=...) takes.
NAMES = ("auto", *IMPLEMENTATIONS)


def choose(request: Request) -> str:
    """The implementation ``"auto"`` runs: cuDNN on GPU where it applies, chunked for long
    sequences where it applies, dense otherwise.

    Pallas stays opt-in: it was to be picked only where it wins, and on an H200 it won nowhere
    (bfloat16, B=4, N=16, H=128, T=1k-16k, causal and not; BUILD_NOTES.md, "Measured on an
    NVIDIA H200"): its forward took 2.0-8.2x cuDNN's time, forward+backward 11.7-55.6x (its
    backward is the chunked kernel's XLA loop over 64 x 64 tiles). Its forward beat chunked's
    (0.46-0.74x the time), but its forward+backward took 2.9-4.6x chunked's, and a call cannot
    know whether it will be differentiated."""
    _, _, T, S = request.shape
    candidates = ("cudnn", "chunked") if T * S >= CHUNKED_MIN_LOGITS else ("cudnn",)
    for name in candidates:
        if IMPLEMENTATIONS[name].unsupported(request) is None:
            return name
    return "dense"


def run(implementation: str, request: Request) -> Result:
    """``request`` through ``implementation`` (a key of :data:`IMPLEMENTATIONS` or ``"auto"``);
    ``ValueError`` naming the reason if it cannot honour the request."""
    chosen = choose(request) if implementation == "auto" else implementation
    reason = IMPLEMENTATIONS[chosen].unsupported(request)
    if reason is not None:
        raise ValueError(f"implementation={chosen!r} cannot {reason}")
    _, _, T, S = request.shape
    if T == 0 or S == 0:
        # Nothing to compute (an empty output, or rows that see no key): dense's result is
        # every implementation's, and no kernel has to handle empty tiles.
        chosen = "dense"
    return IMPLEMENTATIONS[chosen].run(request)
