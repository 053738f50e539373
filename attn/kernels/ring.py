"""Context-parallel (ring) attention: the sequence split over a mesh axis, key/value blocks
passed around the ring of its devices.

Each of the ``n`` devices of the mesh axis holds one block of ``T / n`` queries and one of
``S / n`` keys and values. In step ``s`` device ``i`` attends its queries to the key block
``j = (i - s) mod n`` with :func:`attn.kernels.chunked_attention` (its rows' log-sum-exp too),
merges that into its running result with :func:`attn.merge`, and sends the key/value block on
to device ``i + 1`` (``lax.ppermute``). After ``n`` steps every query has seen every key block.

The mask is evaluated at global positions: a block sees its rule through the block's offsets.
Block pairs the mask leaves empty are skipped (``lax.switch``: no score work, but the block
still travels on), pairs it leaves fully visible run without the mask. The schedule comes from
the mask's tile summary at block size (:func:`block_kinds`): static masks (causal, windows)
decide it at trace time, traced ones (lengths, segment ids) at run time.

Gradients: a custom VJP runs the ring again backward, so a device keeps only its own q, k,
v blocks, output and lse rows, never another device's blocks. Each step recomputes its block
with the chunked kernel and pulls back the block's share of the merged result; the key/value
gradients travel with their blocks and are home after the ``n``-th pass.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec

from attn import masks
from attn.kernels import rules
from attn.kernels.chunked import chunked_attention, traceable_mask
from attn.merge import merge

__all__ = [
    "CONTEXT_AXIS",
    "EMPTY",
    "FULL",
    "PARTIAL",
    "block_kinds",
    "layout_problem",
    "ring_attention",
]

Array = jax.Array

# The mesh axis attend(implementation="ring") splits the sequence over.
CONTEXT_AXIS = "context"
# What a (query block, key block) pair needs: nothing, the keys without the mask, or the mask.
EMPTY, FULL, PARTIAL = 0, 1, 2


def block_kinds(
    mask: masks.Mask | None, shape: tuple[int, int, int, int], num_blocks: int
) -> np.ndarray | Array:
    """Int ``[n, n]``: :data:`EMPTY`, :data:`FULL` or :data:`PARTIAL` for each pair (query
    block, key block) of ``shape = (B, N, T, S)`` cut in ``n = num_blocks`` blocks each way.

    A pair counts as empty or full only if it is so for every example and head. NumPy for
    static masks (known at trace time), a jax array for traced ones."""
    _, _, T, S = shape
    kinds = np.full((num_blocks, num_blocks), FULL)
    if mask is None:
        return kinds
    with jax.ensure_compile_time_eval():
        summary = mask.tile_summary(shape, T // num_blocks, S // num_blocks)
    any_visible = summary.any_visible.any(axis=(0, 1))
    all_visible = summary.all_visible.all(axis=(0, 1))
    xp = np if isinstance(any_visible, np.ndarray) and isinstance(all_visible, np.ndarray) else jnp
    kinds = xp.where(any_visible, xp.where(all_visible, FULL, PARTIAL), EMPTY)
    return xp.broadcast_to(kinds, (num_blocks, num_blocks)).astype(np.int32)


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["rule", "offsets"], meta_fields=[]
)
@dataclasses.dataclass(frozen=True)
class _Shifted:
    """A global rule ``(b, h, q_idx, kv_idx)`` seen from one block: local indices plus the
    block's ``offsets`` (int32 ``[3]``: example, query, key)."""

    rule: Any
    offsets: Array

    def __call__(self, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
        first_b, first_q, first_kv = self.offsets[0], self.offsets[1], self.offsets[2]
        return self.rule(b + first_b, h, q_idx + first_q, kv_idx + first_kv)


@functools.partial(jax.tree_util.register_dataclass, data_fields=["shifted"], meta_fields=[])
@dataclasses.dataclass(frozen=True, eq=False)
class _ShiftedMask(masks.Mask):
    """A global mask seen from one block. The ring has decided that the block is partial, so
    the kernel's own tiles inside it are all evaluated (summarised as partial)."""

    shifted: _Shifted

    def rule(self, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
        return self.shifted(b, h, q_idx, kv_idx)

    def _tile_rule(self, *args: Any) -> masks.TileSummary:
        return masks.TileSummary(np.ones((1, 1, 1, 1), bool), np.zeros((1, 1, 1, 1), bool))


@dataclasses.dataclass(frozen=True)
class _Static:
    """The ring's settings that are not arrays (hashable: a static argument)."""

    axis: str
    num_blocks: int
    batch_axes: tuple[str, ...]  # mesh axes the batch is split over ("data", "fsdp", ...)
    mask: rules.Rebuild | None
    bias: rules.Rebuild | None
    soft_cap: float | None
    precision: Any
    q_tile: int
    kv_tile: int

    @property
    def manual_axes(self) -> tuple[str, ...]:
        return (*self.batch_axes, self.axis)


def _offsets(st: _Static, q: Array, k: Array, kv_block: Array) -> Array:
    """Global (example, query, key) offsets of this device's queries against ``kv_block``."""
    first_b = lax.axis_index(st.batch_axes) * q.shape[0] if st.batch_axes else 0
    first_q = lax.axis_index(st.axis) * q.shape[1]
    return jnp.stack([first_b, first_q, kv_block * k.shape[1]]).astype(jnp.int32)


def _block(
    st: _Static,
    with_mask: bool,
    offsets: Array,
    mask_arrays: list[Array],
    q: Array,
    k: Array,
    v: Array,
    bias_arrays: list[Array],
) -> tuple[Array, Array]:
    """``(out [B, T/n, N, Hv] float32, lse [B, N, T/n])`` of the local queries over one key
    block (``with_mask``: evaluating the mask; otherwise the ring knows every key is visible)."""
    with_mask = with_mask and st.mask is not None  # lax.switch traces every branch
    mask = _ShiftedMask(_Shifted(st.mask(mask_arrays), offsets)) if with_mask else None
    bias = None if st.bias is None else _Shifted(st.bias(bias_arrays), offsets)
    out, lse = chunked_attention(
        q,
        k,
        v,
        mask=mask,
        bias=bias,
        logits_soft_cap=st.soft_cap,
        precision=st.precision,
        q_tile=st.q_tile,
        kv_tile=st.kv_tile,
        return_lse=True,
    )
    return out.astype(jnp.float32), lse


def _pass_on(st: _Static, *blocks: Array) -> tuple[Array, ...]:
    """Send ``blocks`` to the next device of the ring (device ``i`` -> ``i + 1``)."""
    n = st.num_blocks
    return lax.ppermute(blocks, st.axis, [(i, (i + 1) % n) for i in range(n)])


def _forward(
    st: _Static,
    q: Array,
    k: Array,
    v: Array,
    mask_arrays: list[Array],
    bias_arrays: list[Array],
    kinds: Array,
) -> tuple[Array, Array]:
    """Local ``(out float32, lse)`` after a full turn of the ring."""
    B, T, N, _ = q.shape
    i = lax.axis_index(st.axis)

    def step(carry: Any, s: Array) -> tuple[Any, None]:
        k_j, v_j, out, lse = carry
        j = (i - s) % st.num_blocks
        offsets = _offsets(st, q, k, j)

        def attend(with_mask: bool) -> tuple[Array, Array]:
            part = _block(st, with_mask, offsets, mask_arrays, q, k_j, v_j, bias_arrays)
            return merge(out, lse, *part)

        out, lse = lax.switch(
            kinds[i, j], [lambda: (out, lse), lambda: attend(False), lambda: attend(True)]
        )
        k_j, v_j = _pass_on(st, k_j, v_j)
        return (k_j, v_j, out, lse), None

    out = jnp.zeros((B, T, N, v.shape[-1]), jnp.float32)
    lse = jnp.full((B, N, T), -jnp.inf, jnp.float32)
    (_, _, out, lse), _ = lax.scan(step, (k, v, out, lse), jnp.arange(st.num_blocks))
    return out, lse


def _backward(st: _Static, residuals: tuple[Any, ...], cotangents: tuple[Array, Array]) -> Any:
    """The ring again: each block's share of ``d out`` and ``d lse`` pulled back through the
    chunked kernel; dk, dv (and a bias rule's float arrays) accumulate as they travel."""
    q, k, v, mask_arrays, bias_arrays, kinds, out, lse = residuals
    dout, dlse = cotangents
    dout = dout.astype(jnp.float32)
    i = lax.axis_index(st.axis)
    learned = [jnp.issubdtype(a.dtype, jnp.inexact) for a in bias_arrays]
    floats = [a for a, f in zip(bias_arrays, learned, strict=True) if f]
    # Rows that saw no key anywhere: every block's weight is 0 there.
    safe_lse = jnp.where(lse == -jnp.inf, 0.0, lse)

    def with_floats(float_arrays: list[Array]) -> list[Array]:
        given = iter(float_arrays)
        return [next(given) if f else a for a, f in zip(bias_arrays, learned, strict=True)]

    def step(carry: Any, s: Array) -> tuple[Any, None]:
        k_j, v_j, dq, dk_j, dv_j, dfloats = carry
        j = (i - s) % st.num_blocks
        offsets = _offsets(st, q, k, j)

        def pull(with_mask: bool) -> tuple[Array, ...]:
            def block(q: Array, k: Array, v: Array, fl: list[Array]) -> tuple[Array, Array]:
                return _block(st, with_mask, offsets, mask_arrays, q, k, v, with_floats(fl))

            (out_j, lse_j), pullback = jax.vjp(block, q, k_j, v_j, floats)
            # out = sum_j w_j out_j with w_j = exp(lse_j - lse): d out_j = w_j d out and
            # d lse_j = w_j (<d out, out_j - out> + d lse).
            weight = jnp.where(lse_j == -jnp.inf, 0.0, jnp.exp(lse_j - safe_lse))  # [B, N, T]
            rows = weight.transpose(0, 2, 1)[..., None]
            dout_j = rows * dout
            dlse_j = weight * (jnp.sum(dout * (out_j - out), axis=-1).transpose(0, 2, 1) + dlse)
            return pullback((dout_j, dlse_j))

        def skip() -> tuple[Array, ...]:
            zeros = [jnp.zeros_like(a) for a in floats]
            return jnp.zeros_like(q), jnp.zeros_like(k_j), jnp.zeros_like(v_j), zeros

        grads = lax.switch(kinds[i, j], [skip, lambda: pull(False), lambda: pull(True)])
        dq_s, dk_s, dv_s, dfloats_s = grads
        dfloats = [a + g for a, g in zip(dfloats, dfloats_s, strict=True)]
        k_j, v_j, dk_j, dv_j = _pass_on(st, k_j, v_j, dk_j + dk_s, dv_j + dv_s)
        return (k_j, v_j, dq + dq_s, dk_j, dv_j, dfloats), None

    f32 = functools.partial(jnp.zeros, dtype=jnp.float32)
    carry = (k, v, f32(q.shape), f32(k.shape), f32(v.shape), [jnp.zeros_like(a) for a in floats])
    (_, _, dq, dk, dv, dfloats), _ = lax.scan(step, carry, jnp.arange(st.num_blocks))
    dfloats = iter(dfloats)
    dbias = [next(dfloats) if f else None for f in learned]
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None, dbias, None


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _ring(st: _Static, *args: Any) -> tuple[Array, Array]:
    return _forward(st, *args)


def _ring_forward(st: _Static, *args: Any) -> tuple[tuple[Array, Array], tuple[Any, ...]]:
    out, lse = _forward(st, *args)
    return (out, lse), (*args, out, lse)


_ring.defvjp(_ring_forward, _backward)


def layout_problem(
    shape: tuple[int, int, int, int], mesh: Any = None, axis: str = CONTEXT_AXIS
) -> str | None:
    """Why ``shape = (B, N, T, S)`` cannot be split over the mesh axis ``axis`` of ``mesh`` (the
    ambient one, ``jax.set_mesh``, when ``None``), or ``None`` if it can."""
    mesh = jax.sharding.get_abstract_mesh() if mesh is None else mesh
    if axis not in mesh.axis_names:
        return (
            f"split the sequence without a mesh axis {axis!r}: the mesh has axes "
            f"{tuple(mesh.axis_names)} (set one with jax.set_mesh(jax.make_mesh((n,), "
            f"({axis!r},))))"
        )
    n, (_, _, T, S) = mesh.shape[axis], shape
    if T % n or S % n:
        return (
            f"split T={T} queries and S={S} keys over the {n} devices of mesh axis {axis!r} "
            f"(pad them to multiples of {n})"
        )
    return None


def _batch_axes(mesh: Any, axis: str, batch: int) -> tuple[str, ...]:
    """The other mesh axes the batch is split over: all of them when their product divides
    ``batch`` (the data-parallel layout), none otherwise (the batch is then replicated)."""
    others = tuple(name for name in mesh.axis_names if name != axis and mesh.shape[name] > 1)
    return others if batch % math.prod(mesh.shape[name] for name in others) == 0 else ()


def _laid_out(mesh: Any, axes: tuple[str, ...], specs: Any, args: Any) -> Any:
    """``args`` moved to ``specs``: shard_map does that itself on ``Auto`` mesh axes, but
    ``Explicit`` axes (``jax.make_mesh``'s default) need an explicit ``jax.reshard``."""
    explicit = jax.sharding.AxisType.Explicit
    if all(mesh.axis_types[mesh.axis_names.index(name)] != explicit for name in axes):
        return args
    if isinstance(mesh, jax.sharding.Mesh):
        specs = jax.tree.map(
            lambda spec: jax.sharding.NamedSharding(mesh, spec),
            specs,
            is_leaf=lambda x: isinstance(x, PartitionSpec),
        )
    return jax.tree.map(
        lambda spec, arg: jax.tree.map(lambda a: jax.reshard(a, spec), arg),
        specs,
        args,
        is_leaf=lambda x: isinstance(x, PartitionSpec | jax.sharding.NamedSharding),
    )


def ring_attention(
    q: Array,
    k: Array,
    v: Array,
    *,
    mask: masks.Mask | Array | None = None,
    bias: rules.Rule | None = None,
    weighting: str = "softmax",
    weighting_param: Any = None,
    logits_soft_cap: float | None = None,
    precision: Any = None,
    q_tile: int = 512,
    kv_tile: int = 256,
    return_lse: bool = False,
    mesh: Any = None,
    axis: str = CONTEXT_AXIS,
) -> Array | tuple[Array, Array]:
    """Softmax attention with logits ``q . k + bias`` over a sequence split across devices.

    ``T`` and ``S`` are split in ``n`` blocks over the mesh axis ``axis`` (``n`` its size) and
    the batch over the mesh's other axes (when their product divides ``B``); heads are not
    split. Call it inside or outside ``jit``: ``shard_map`` moves the arrays to that layout.
    :func:`attn.attend` with ``implementation="ring"`` calls this after folding its score into
    q and k, with the ambient mesh.

    Args:
      q: queries ``[B, T, N, H]``; the logits are the plain dot product (scale q beforehand).
      k: keys ``[B, S, K, H]`` with ``N % K == 0``.
      v: values ``[B, S, K, Hv]``.
      mask: an :class:`attn.masks.Mask` or boolean array broadcastable to ``[B, N, T, S]``,
        at global positions (its arrays are replicated on every device).
      bias: an elementwise rule ``(b, h, q_idx, kv_idx) -> float`` at global positions (its
        float arrays get gradients); bias arrays are not split and are refused.
      weighting, weighting_param: ``"softmax"`` and ``None`` (no sink), the only weighting
        whose blocks merge exactly (the arguments of :func:`attn.kernels.chunked_attention`).
      logits_soft_cap, precision: as in :func:`attn.kernels.chunked_attention`.
      q_tile, kv_tile: the chunked kernel's tiles inside each block.
      return_lse: also return the log-sum-exp rows ``[B, N, T]``.
      mesh: a ``jax.sharding.Mesh`` or ``AbstractMesh``; ``None``: the ambient one.
      axis: the mesh axis the sequence is split over.

    Returns:
      ``out [B, T, N, Hv]`` in v's dtype (0 for rows that see no key), or ``(out, lse)``.
    """
    B, T, N, _ = q.shape
    shape = (B, N, T, k.shape[1])
    mesh = jax.sharding.get_abstract_mesh() if mesh is None else mesh
    problem = layout_problem(shape, mesh, axis)
    if problem is not None:
        raise ValueError(f"ring_attention cannot {problem}")
    if weighting != "softmax" or weighting_param is not None:
        raise ValueError(
            "ring_attention merges blocks by their log-sum-exp: it runs softmax without a sink, "
            f"got weighting={weighting!r}, weighting_param={weighting_param!r}"
        )
    if bias is not None and not callable(bias):
        raise ValueError(
            "ring_attention takes a bias rule (b, h, q_idx, kv_idx) -> float, such as "
            "attn.positional.alibi_rule, not a bias array"
        )
    n = mesh.shape[axis]
    if mask is not None:
        mask = traceable_mask(masks.as_mask(mask), shape)
    kinds = jnp.asarray(block_kinds(mask, shape, n))
    mask_arrays, mask_rebuild = rules.partition(mask) if mask is not None else ([], None)
    bias_arrays, bias_rebuild = rules.partition(bias) if bias is not None else ([], None)
    batch_axes = _batch_axes(mesh, axis, B)
    st = _Static(
        axis, n, batch_axes, mask_rebuild, bias_rebuild, logits_soft_cap, precision, q_tile, kv_tile
    )
    split = PartitionSpec(batch_axes or None, axis)
    replicated = PartitionSpec()

    in_specs = (split, split, split, replicated, replicated, replicated)
    args = (q, k, v, [jnp.asarray(a) for a in mask_arrays], [jnp.asarray(a) for a in bias_arrays])
    args = _laid_out(mesh, st.manual_axes, in_specs, (*args, kinds))
    out, lse = jax.shard_map(
        functools.partial(_ring, st),
        mesh=mesh,
        in_specs=in_specs,
        out_specs=(split, PartitionSpec(batch_axes or None, None, axis)),
        axis_names=set(st.manual_axes),
        # The chunked kernel's loops start from fresh zeros, which the replication checker
        # takes for device-invariant values; every value here varies by device. Unchecked,
        # the replicated mask and bias arrays' gradients are summed over devices all the same.
        check_vma=False,
    )(*args)
    out = out.astype(v.dtype)
    return (out, lse) if return_lse else out
