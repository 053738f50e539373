"""A Pallas forward kernel for tiled attention with attn's mask objects, score-bias rules and
weightings; differentiated by the chunked kernel's recomputing backward pass.

One program per (example x key head, query tile) walks the key tiles its row band may see (from
the static tile plan: the range between the first and last visited tile) with the same online
weighting as the chunked kernel (:mod:`attn.kernels.online`), evaluating the mask and bias rules
per tile and reading a bias array's block (zero-padded to whole tiles first where a length is
ragged: Pallas blocks cannot run past the end). It targets GPUs (Triton); on other backends it
runs in Pallas' interpreter, which is how the tests check it (slowly) on CPU.

Compiled for a GPU it refuses (``ValueError``, before compiling) what Triton cannot compile
correctly: tiles or head dims that are below 16 or not powers of 2, query-head groups that are
not powers of 2, and mask or bias rules that gather from arrays (padding lengths, segment ids,
ALiBi slopes, T5 tables) or read arrays whose size is not a power of 2. On an H200 (jax 0.11.2)
4-wide tiles with head dim 8 compiled without an error and returned wrong values (about twice
the right outputs); the interpreter runs every configuration.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from attn import masks
from attn.kernels import flash, rules
from attn.kernels.chunked import tiled_attention
from attn.kernels.tiling import TilePlan

__all__ = ["pallas_attention"]

Array = jax.Array

# Triton's dot needs every dimension (M, N and K) to be at least 16: its own frontend refuses
# smaller ones, but Pallas' Triton lowering checks this only for float64, and on an H200 a
# kernel with 4-wide tiles and head dim 8 compiled and returned wrong values.
TRITON_MIN_DOT = 16


def _kv_ranges(plan: TilePlan) -> np.ndarray:
    """Per query tile, ``[first, last + 1)`` of the key tiles to visit (int32 ``[nq, 2]``)."""
    ranges = np.zeros((plan.num_q_tiles, 2), np.int32)
    for i, j in plan.full + plan.partial:
        first, end = ranges[i]
        ranges[i] = (j, j + 1) if first == end else (min(first, j), max(end, j + 1))
    return ranges


def _whole(array: Array) -> pl.BlockSpec:
    """Every program reads the whole (small) array: lengths, ids, slopes, tables."""
    return pl.BlockSpec(array.shape, lambda *_, rank=array.ndim: (0,) * rank)


def _values_spec(bias_values: Array, plan: TilePlan, num_kv_heads: int) -> tuple[Array, Any]:
    """A bias array ``[B | 1, N | 1, T | 1, S | 1]`` padded to whole tiles, and the block spec
    that gives program ``(b * K + k, i)`` its example, the heads of key head k, query tile i
    and every key (broadcast axes stay size 1)."""
    Bb, Nb, Tb, Sb = bias_values.shape
    Tp, Sp = plan.padded_lengths
    pads = [(0, 0), (0, 0), (0, Tp - Tb if Tb > 1 else 0), (0, Sp - Sb if Sb > 1 else 0)]
    padded = jnp.pad(bias_values, pads) if any(p for _, p in pads) else bias_values
    heads = Nb // num_kv_heads if Nb > 1 else 1
    block = (1, heads, plan.q_tile if Tb > 1 else 1, padded.shape[3])

    def index(bk: Array, i: Array) -> tuple[Any, ...]:
        return (
            bk // num_kv_heads if Bb > 1 else 0,
            bk % num_kv_heads if Nb > 1 else 0,
            i if Tb > 1 else 0,
            0,
        )

    return padded, pl.BlockSpec(block, index)


def _rule_tiles(
    st: flash.Static,
    mask_arrays: Sequence[Array],
    bias_arrays: Sequence[Array],
    bk: Array,
    i: Array,
    j: Array,
) -> tuple[Array | None, Array | None]:
    """The bias and mask rules on key tile ``j`` of program ``(bk, i)``, ``[rows, kv_tile]``
    each (``None`` for a rule the call does not have), as a program evaluates them."""
    _, N, K = st.dims
    plan = st.plan
    tile = functools.partial(
        rules.program_tile_values,
        num_heads=N,
        num_kv_heads=K,
        batch_index=bk // K,
        kv_head=bk % K,
        q_start=i * plan.q_tile,
        q_tile=plan.q_tile,
        kv_start=j * plan.kv_tile,
        kv_tile=plan.kv_tile,
    )
    bias = None if st.bias is None else tile(st.bias(list(bias_arrays)))
    mask = None if st.mask is None else tile(st.mask(list(mask_arrays)).rule)
    return bias, mask


def _primitive_names(jaxpr: Any) -> set[str]:
    """Names of the primitives in ``jaxpr`` and in the jaxprs its equations hold (loops, conds)."""
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                inner = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr holds its Jaxpr
                if hasattr(inner, "eqns"):
                    names |= _primitive_names(inner)
    return names


def _is_power_of_2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _triton_problems(
    st: flash.Static,
    head_dim: int,
    value_dim: int,
    mask_arrays: Sequence[Array],
    bias_arrays: Sequence[Array],
) -> list[str]:
    """Why the kernel for ``st`` cannot be compiled for a GPU (Triton) and give right values;
    empty if nothing is known against it. Only shapes are traced."""
    problems = []
    _, N, K = st.dims
    sizes = {
        "query tile": st.plan.q_tile,
        "key tile": st.plan.kv_tile,
        "head dim": head_dim,
        "value head dim": value_dim,
    }
    for name, size in sizes.items():
        # Each is a dimension of one of the program's two dots and of its loads and stores.
        if size < TRITON_MIN_DOT or not _is_power_of_2(size):
            clipped = " (tiles are clipped to T and S)" if "tile" in name else ""
            problems.append(f"{name} {size}{clipped} must be a power of 2 and >= {TRITON_MIN_DOT}")
    if not _is_power_of_2(N // K):
        # A program's rows are q_tile * G: every Triton array size must be a power of 2.
        problems.append(f"{N // K} query heads per key head must be a power of 2")
    arrays = [*mask_arrays, *bias_arrays]
    for array in arrays:
        # A program loads each array whole; Triton loads only power-of-2 sizes.
        if not _is_power_of_2(max(array.size, 1)):
            problems.append(
                f"a mask or bias rule reads an array of shape {tuple(array.shape)}, whose "
                "size must be a power of 2"
            )
    if st.mask is not None or st.bias is not None:
        specs = [
            [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in group]
            for group in (mask_arrays, bias_arrays)
        ]
        index = jax.ShapeDtypeStruct((), jnp.int32)
        probe = functools.partial(_rule_tiles, st)
        if "gather" in _primitive_names(jax.make_jaxpr(probe)(*specs, index, index, index).jaxpr):
            problems.append(
                "a mask or bias rule reads arrays at per-entry indices (padding lengths, "
                "segment ids, per-example offsets, ALiBi slopes, T5 tables, a softmax "
                "temperature array): a gather, which Pallas' Triton lowering lacks"
            )
    return problems


def _forward(
    st: flash.Static,
    q: Array,
    k: Array,
    v: Array,
    mask_arrays: list[Array],
    bias_arrays: list[Array],
    bias_values: Array | None,
    param: Array | None,
    visit: Array | None,
    *,
    interpret: bool,
) -> tuple[Array, Array | None]:
    del visit  # traced summaries plan every tile; each one evaluates the mask
    kind, plan, rows = st.kind, st.plan, st.rows
    _, N, K = st.dims
    tq, tk = plan.q_tile, plan.kv_tile
    BK, _, H = q.shape
    Hv = v.shape[-1]
    if not interpret:
        problems = _triton_problems(st, H, Hv, mask_arrays, bias_arrays)
        if problems:
            # Refused here, while tracing: some of these compile and return wrong values.
            raise ValueError(
                "pallas_attention cannot compile this call for a GPU (Pallas' Triton "
                f"lowering): {'; '.join(problems)}. Use implementation='cudnn' or 'chunked', "
                "or interpret=True."
            )
    # 0-d leaves (scalar lengths) travel as [1] blocks and are reshaped back inside.
    shapes = [a.shape for a in (*mask_arrays, *bias_arrays)]
    extras = [
        jnp.reshape(a, (-1,) if a.ndim == 0 else a.shape) for a in (*mask_arrays, *bias_arrays)
    ]
    ranges = jnp.asarray(_kv_ranges(plan))
    rows_spec = pl.BlockSpec((1, rows), lambda bk, i: (bk, i))
    values = []
    if bias_values is not None:
        padded, values_spec = _values_spec(bias_values, plan, K)
        values = [padded]
    in_specs = [
        pl.BlockSpec((1, rows, H), lambda bk, i: (bk, i, 0)),
        pl.BlockSpec((1, k.shape[1], H), lambda bk, i: (bk, 0, 0)),
        pl.BlockSpec((1, v.shape[1], Hv), lambda bk, i: (bk, 0, 0)),
        _whole(ranges),
        *([] if param is None else [rows_spec]),
        *([] if bias_values is None else [values_spec]),
        *(_whole(a) for a in extras),
    ]

    def body(q_ref, k_ref, v_ref, ranges_ref, *refs):
        param_ref = None if param is None else refs[0]
        refs = refs[(param is not None) :]
        values_ref = refs[0] if values else None
        refs = refs[len(values) :]
        extra_refs, out_refs = refs[: len(extras)], refs[len(extras) :]
        loaded = [ref[...].reshape(shape) for ref, shape in zip(extra_refs, shapes, strict=True)]
        mask_loaded, bias_loaded = loaded[: len(mask_arrays)], loaded[len(mask_arrays) :]
        bk, i = pl.program_id(0), pl.program_id(1)
        q_i = q_ref[0]
        # Tiles stay 2-D, [rows, kv_tile]: Triton's dot takes no batch axis.
        param_i = None if param_ref is None else param_ref[0]

        def step(j: Array, carry: Any) -> Any:
            state, acc = carry
            k_j = k_ref[0, pl.ds(j * tk, tk), :]
            v_j = v_ref[0, pl.ds(j * tk, tk), :]
            x = jnp.dot(q_i, k_j.T, precision=st.precision, preferred_element_type=jnp.float32)
            bias_j, mask_j = _rule_tiles(st, mask_loaded, bias_loaded, bk, i, j)
            if bias_j is not None:
                x = x + bias_j.astype(jnp.float32)
            if values_ref is not None:
                keys = pl.ds(j * tk, tk) if values_ref.shape[3] > 1 else slice(None)
                block = values_ref[:, :, :, keys]
                x = x + rules.program_layout(block, N // K, tq, tk).astype(jnp.float32)
            x, _ = flash.soft_cap(x, st.soft_cap)
            visible = (j * tk + jnp.arange(tk)) < st.kv_len
            if mask_j is not None:
                visible = visible & mask_j
            return kind.accumulate(x, visible, state, acc, v_j, param_i, st.precision)

        init = (kind.init((rows,), param_i), jnp.zeros((rows, Hv), jnp.float32))
        state, acc = jax.lax.fori_loop(ranges_ref[i, 0], ranges_ref[i, 1], step, init)
        out, lse = kind.finish(state, acc, param_i)
        out_refs[0][...] = out[None]
        if lse is not None:
            out_refs[1][...] = lse[None]

    out_shape = [jax.ShapeDtypeStruct((BK, q.shape[1], Hv), jnp.float32)]
    out_specs = [pl.BlockSpec((1, rows, Hv), lambda bk, i: (bk, i, 0))]
    if kind.has_lse:
        out_shape.append(jax.ShapeDtypeStruct(q.shape[:2], jnp.float32))
        out_specs.append(rows_spec)
    compiler_params = None
    if not interpret:
        # Triton, named: jax 0.10 lowers an unnamed GPU kernel with Mosaic GPU, which refuses
        # this kernel's small copies; jax 0.11 defaults to Triton. Imported here: it needs a
        # jaxlib built with Triton, which the interpreter does not.
        from jax.experimental.pallas import triton as pltriton

        compiler_params = pltriton.CompilerParams()
    results = pl.pallas_call(
        body,
        out_shape=out_shape,
        grid=(BK, plan.num_q_tiles),
        in_specs=in_specs,
        out_specs=out_specs,
        interpret=interpret,
        compiler_params=compiler_params,
    )(q, k, v, ranges, *([] if param is None else [param]), *values, *extras)
    return results[0], (results[1] if kind.has_lse else None)


@functools.cache
def _kernel(interpret: bool) -> Any:
    return flash.with_backward(functools.partial(_forward, interpret=interpret))


def pallas_attention(
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
    q_tile: int = 64,
    kv_tile: int = 64,
    return_lse: bool = False,
    interpret: bool | None = None,
) -> Array | tuple[Array, Array]:
    """:func:`attn.kernels.chunked_attention` with its forward pass as a Pallas kernel; same
    arguments and results. ``interpret`` defaults to ``True`` off GPU (Pallas' interpreter)."""
    if interpret is None:
        interpret = jax.default_backend() != "gpu"
    return tiled_attention(
        _kernel(bool(interpret)),
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
