"""A Pallas forward kernel for tiled attention with attn's mask objects, score-bias rules and
weightings; differentiated by the chunked kernel's recomputing backward pass.

One program per (example x key head, query tile) walks the key tiles its row band may see (from
the static tile plan: the range between the first and last visited tile) with the same online
weighting as the chunked kernel (:mod:`attn.kernels.online`), evaluating the mask and bias rules
per tile and reading a bias array's block (zero-padded to whole tiles first where a length is
ragged: Pallas blocks cannot run past the end). It targets GPUs (Triton); on other backends it
runs in Pallas' interpreter, which is how the tests check it (slowly) on CPU. Rules that read
arrays (segment ids, learned tables) gather inside the kernel: the interpreter runs them, a GPU
compiler may refuse.
"""

from __future__ import annotations

import functools
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
        mask = None if st.mask is None else st.mask(loaded[: len(mask_arrays)])
        bias = None if st.bias is None else st.bias(loaded[len(mask_arrays) :])
        bk, i = pl.program_id(0), pl.program_id(1)
        tile = functools.partial(rules.program_tile_values, num_heads=N, num_kv_heads=K)
        where = {"batch_index": bk // K, "kv_head": bk % K, "q_start": i * tq, "q_tile": tq}
        q_i = q_ref[0]
        # Tiles stay 2-D, [rows, kv_tile]: Triton's dot takes no batch axis.
        param_i = None if param_ref is None else param_ref[0]

        def step(j: Array, carry: Any) -> Any:
            state, acc = carry
            k_j = k_ref[0, pl.ds(j * tk, tk), :]
            v_j = v_ref[0, pl.ds(j * tk, tk), :]
            x = jnp.dot(q_i, k_j.T, precision=st.precision, preferred_element_type=jnp.float32)
            kv_where = {"kv_start": j * tk, "kv_tile": tk}
            if bias is not None:
                x = x + tile(bias, **where, **kv_where).astype(jnp.float32)
            if values_ref is not None:
                keys = pl.ds(j * tk, tk) if values_ref.shape[3] > 1 else slice(None)
                block = values_ref[:, :, :, keys]
                x = x + rules.program_layout(block, N // K, tq, tk).astype(jnp.float32)
            x, _ = flash.soft_cap(x, st.soft_cap)
            visible = (j * tk + jnp.arange(tk)) < st.kv_len
            if mask is not None:
                visible = visible & tile(mask.rule, **where, **kv_where)
            return kind.accumulate(x, visible, state, acc, v_j, param_i)

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
