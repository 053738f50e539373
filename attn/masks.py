"""Attention masks: elementwise rules ``(b, h, q_idx, kv_idx) -> bool`` with ``True`` = may attend.

A :class:`Mask` can

* build a dense boolean array broadcastable to ``[B, N, T, S]`` (:meth:`Mask.dense`), and
* summarise ``(query tile, key tile)`` pairs as fully masked, partial or fully visible
  (:meth:`Mask.tile_summary`), so that kernels can skip tiles or drop the elementwise test,
* describe itself as the ``&`` of closed-form :class:`Factors` (windows, lengths, key-only
  arrays) for backends that take masks as arguments rather than rules (:meth:`Mask.factors`),
* check its arrays against an attention shape ``(B, N, T, S)`` (:meth:`Mask.check`).

Masks combine with ``&``, ``|`` and ``~``. Plain boolean arrays are accepted wherever a mask is
(see :func:`from_array`, :func:`as_array`). Rules are written with operators and indexing only,
so the same code runs on NumPy index grids (giving constants for static masks) and on traced
arrays (lengths and segment ids under ``jit``, tile offsets inside a kernel loop).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = Any  # jax.Array or np.ndarray: rules work on both.

__all__ = [
    "Factors",
    "Mask",
    "TileSummary",
    "as_array",
    "as_mask",
    "causal",
    "chunked",
    "clear_hidden",
    "from_array",
    "from_fn",
    "global_tokens",
    "padding",
    "prefix_lm",
    "random_blocks",
    "segments",
    "sliding_window",
    "strided",
    "zero_rows",
]


@dataclasses.dataclass(frozen=True)
class TileSummary:
    """Per tile pair: ``any_visible`` (some entry may attend) and ``all_visible`` (every entry may).

    Both are boolean arrays broadcastable to ``[B, N, num_q_tiles, num_kv_tiles]``. They are
    conservative: ``any_visible`` may be True for a tile that is in fact fully masked (the kernel
    then evaluates it elementwise), but never False for a tile with a visible entry.
    """

    any_visible: Array
    all_visible: Array

    @property
    def fully_masked(self) -> Array:
        return ~self.any_visible

    @property
    def partial(self) -> Array:
        return self.any_visible & ~self.all_visible


def _both(a: Any, b: Any, combine: Callable[[Any, Any], Any]) -> Any:
    """``combine(a, b)``, or the one that is not ``None``."""
    return b if a is None else a if b is None else combine(a, b)


def _per_row(lengths: Array) -> jax.Array:
    """Lengths ``[B]`` or one for all examples as an int32 column ``[B | 1, 1]``."""
    return jnp.reshape(jnp.asarray(lengths, jnp.int32), (-1, 1))


@dataclasses.dataclass(frozen=True)
class Factors:
    """A mask as the ``&`` of closed-form factors, for backends that take masks as arguments
    (``jax.nn.dot_product_attention``'s window and lengths) or as query and key validity
    (linear attention) rather than as a rule. :meth:`Mask.factors` gives them.

    Query ``i`` of example ``b`` may see key ``j`` iff every factor that is not ``None`` holds:

    * ``left``: ``j >= i - left``; ``right``: ``j <= i + right`` (``causal(offset)`` is
      ``right=offset``; ``sliding_window(left, right)`` sets both);
    * ``q_lengths``: ``i < q_lengths[b]``; ``kv_lengths``: ``j < kv_lengths[b]`` (int arrays
      ``[B]`` or scalars, maybe traced);
    * ``kv_valid``: ``kv_valid[b, j]`` (bool ``[B | 1, S]``: a key-only array mask);
    * ``rest``: the part with no closed form, a :class:`Mask` whose rule decides.

    With ``rest is None`` the factors are the whole mask, exactly.
    """

    left: int | None = None
    right: int | None = None
    q_lengths: Array | None = None
    kv_lengths: Array | None = None
    kv_valid: Array | None = None
    rest: Mask | None = None

    def __and__(self, other: Factors) -> Factors:
        def xp(*values: Any) -> Any:
            return np if _is_host(*values) else jnp

        return Factors(
            left=_both(self.left, other.left, min),
            right=_both(self.right, other.right, min),
            q_lengths=_both(self.q_lengths, other.q_lengths, lambda a, b: xp(a, b).minimum(a, b)),
            kv_lengths=_both(
                self.kv_lengths, other.kv_lengths, lambda a, b: xp(a, b).minimum(a, b)
            ),
            kv_valid=_both(self.kv_valid, other.kv_valid, lambda a, b: a & b),
            rest=_both(self.rest, other.rest, lambda a, b: a & b),
        )

    def queries(self, shape: tuple[int, int, int, int]) -> jax.Array | None:
        """Bool ``[B, T]``: the queries that ``q_lengths`` keeps (``None``: every query)."""
        B, _, T, _ = _check_dims(shape)
        if self.q_lengths is None:
            return None
        return jnp.broadcast_to(jnp.arange(T)[None, :] < _per_row(self.q_lengths), (B, T))

    def keys(self, shape: tuple[int, int, int, int]) -> jax.Array | None:
        """Bool ``[B, S]``: the keys that the key-only factors (``kv_lengths``, ``kv_valid``)
        keep; no query sees any other key, whatever ``rest`` says (``None``: every key)."""
        B, _, _, S = _check_dims(shape)
        valid = None
        if self.kv_lengths is not None:
            valid = jnp.arange(S)[None, :] < _per_row(self.kv_lengths)
        if self.kv_valid is not None:
            valid = _both(valid, jnp.asarray(self.kv_valid), lambda a, b: a & b)
        return None if valid is None else jnp.broadcast_to(valid, (B, S))

    def interval(self, shape: tuple[int, int, int, int]) -> tuple[jax.Array, jax.Array]:
        """Per query row, the first and last key that the window and length factors let it
        see: int32 ``[B, T]`` each, within ``[0, S - 1]`` unless the row sees nothing (then
        ``first > last``). The mask's own rows when ``kv_valid`` and ``rest`` are ``None``."""
        B, _, T, S = _check_dims(shape)
        row = jnp.arange(T, dtype=jnp.int32)[None, :]
        first, last = jnp.zeros_like(row), jnp.full_like(row, S - 1)
        if self.left is not None:
            first = jnp.maximum(first, row - self.left)
        if self.right is not None:
            last = jnp.minimum(last, row + self.right)
        if self.kv_lengths is not None:
            last = jnp.minimum(last, _per_row(self.kv_lengths) - 1)
        if self.q_lengths is not None:
            last = jnp.where(row < _per_row(self.q_lengths), last, -1)
        return jnp.broadcast_to(first, (B, T)), jnp.broadcast_to(last, (B, T))


def _pytree(*meta_fields: str) -> Callable[[type], type]:
    """Register a mask dataclass as a pytree: arrays are leaves (traced under ``jit``), the named
    fields are static."""

    def register(cls: type) -> type:
        data = [f.name for f in dataclasses.fields(cls) if f.name not in meta_fields]
        return jax.tree_util.register_dataclass(
            cls, data_fields=data, meta_fields=list(meta_fields)
        )

    return register


def _tile_bounds(length: int, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last index of each tile of ``range(length)`` (last tile may be short)."""
    first = np.arange(0, length, tile)
    last = np.minimum(first + tile, length) - 1
    return first, last


def _check_dims(shape: tuple[int, ...], name: str = "shape") -> tuple[int, int, int, int]:
    if len(shape) != 4:
        raise ValueError(f"{name} must be (B, N, T, S), got {shape}")
    return tuple(int(d) for d in shape)  # type: ignore[return-value]


def _is_host(*values: Any) -> bool:
    """Whether all ``values`` are NumPy or Python (static), not jax arrays (maybe traced)."""
    return all(isinstance(value, int | np.generic | np.ndarray) for value in values)


def _host_or_jax(values: Any) -> Array:
    """NumPy for host values (static: kernels can skip tiles at trace time), jax otherwise.

    ``jnp.asarray`` would turn NumPy into a traced constant when a mask is built inside ``jit``,
    and its tile summary with it.
    """
    leaves = jax.tree_util.tree_leaves(values) if isinstance(values, list | tuple) else [values]
    return np.asarray(values) if _is_host(*leaves) else jnp.asarray(values)


def _lookup(table: Array, *indices: Array) -> Array:
    """``table[indices]``: NumPy indexing for host indices (static results), jax indexing for
    traced ones (a NumPy table cannot be indexed by tracers)."""
    table = table if _is_host(*indices) else jnp.asarray(table)
    return table[indices]


class Mask(abc.ABC):
    """An elementwise attention mask. Subclasses define :meth:`rule` and, where they can do
    better than evaluating every entry, :meth:`_tile_rule`."""

    # Makes ``numpy_array & mask`` defer to Mask.__rand__ instead of broadcasting elementwise.
    __array_ufunc__ = None

    @abc.abstractmethod
    def rule(self, b: Array, h: Array, q_idx: Array, kv_idx: Array) -> Array:
        """Whether query ``q_idx`` of example ``b``, head ``h`` may attend to key ``kv_idx``.

        Arguments are integer arrays that broadcast against each other; the result broadcasts
        to their common shape.
        """

    def __call__(self, b: Array, h: Array, q_idx: Array, kv_idx: Array) -> Array:
        return self.rule(b, h, q_idx, kv_idx)

    def dense(self, shape: tuple[int, int, int, int]) -> Array:
        """Boolean array broadcastable to ``shape = (B, N, T, S)``, rank 4."""
        B, N, T, S = _check_dims(shape)
        b = np.arange(B).reshape(B, 1, 1, 1)
        h = np.arange(N).reshape(1, N, 1, 1)
        q_idx = np.arange(T).reshape(1, 1, T, 1)
        kv_idx = np.arange(S).reshape(1, 1, 1, S)
        out = self.rule(b, h, q_idx, kv_idx)
        while out.ndim < 4:
            out = out[None]
        return out

    def tile_summary(
        self, shape: tuple[int, int, int, int], q_tile: int, kv_tile: int
    ) -> TileSummary:
        """Summary over tiles of ``q_tile`` queries by ``kv_tile`` keys (see :class:`TileSummary`).

        Tiles at the end of the sequences may be shorter; entries past ``T``/``S`` do not count.
        """
        B, N, T, S = _check_dims(shape)
        if q_tile < 1 or kv_tile < 1:
            raise ValueError(f"tile sizes must be positive, got q_tile={q_tile}, kv_tile={kv_tile}")
        q_first, q_last = _tile_bounds(T, q_tile)
        kv_first, kv_last = _tile_bounds(S, kv_tile)
        b = np.arange(B).reshape(B, 1, 1, 1)
        h = np.arange(N).reshape(1, N, 1, 1)
        summary = self._tile_rule(
            b,
            h,
            q_first.reshape(1, 1, -1, 1),
            q_last.reshape(1, 1, -1, 1),
            kv_first.reshape(1, 1, 1, -1),
            kv_last.reshape(1, 1, 1, -1),
            shape,
            (q_tile, kv_tile),
        )
        any_visible, all_visible = summary.any_visible, summary.all_visible
        while any_visible.ndim < 4:
            any_visible = any_visible[None]
        while all_visible.ndim < 4:
            all_visible = all_visible[None]
        return TileSummary(any_visible, all_visible)

    def factors(self) -> Factors:
        """The mask as the ``&`` of closed-form :class:`Factors`; what has no closed form is
        ``rest``. Masks without a closed form return ``Factors(rest=self)``."""
        return Factors(rest=self)

    def check(self, shape: tuple[int, int, int, int]) -> None:
        """Raise ``ValueError`` unless the mask's arrays (lengths, ids, boolean arrays) fit
        attention of ``shape = (B, N, T, S)``; a rule without arrays fits every shape.

        Rules index their arrays with the positions of that shape, so an array of another
        length would be read out of range (jax clamps such reads silently)."""
        _check_dims(shape)

    def _tile_rule(
        self,
        b: Array,
        h: Array,
        q_first: Array,
        q_last: Array,
        kv_first: Array,
        kv_last: Array,
        shape: tuple[int, int, int, int],
        tiles: tuple[int, int],
    ) -> TileSummary:
        """Exact summary from the dense mask (O(T * S) work and memory). Masks with an interval
        rule override this with O(tiles) arithmetic."""
        del q_first, q_last, kv_first, kv_last
        B, N, T, S = shape
        q_tile, kv_tile = tiles
        dense = self.dense(shape)
        nq, nk = -(-T // q_tile), -(-S // kv_tile)
        pad_t, pad_s = nq * q_tile - T, nk * kv_tile - S
        # NumPy stays NumPy so static masks summarise to constants, even inside jit.
        xp = np if _is_host(dense) else jnp
        lead = dense.shape[:2]
        dense = xp.broadcast_to(dense, (*lead, T, S))
        # Padding: never counts as visible for "any", always counts as visible for "all".
        pads = ((0, 0), (0, 0), (0, pad_t), (0, pad_s))
        vis_any = xp.pad(dense, pads, constant_values=False)
        vis_all = xp.pad(dense, pads, constant_values=True)
        tiled_shape = (*lead, nq, q_tile, nk, kv_tile)
        any_visible = vis_any.reshape(tiled_shape).any(axis=(3, 5))
        all_visible = vis_all.reshape(tiled_shape).all(axis=(3, 5))
        del b, h, B, N
        return TileSummary(any_visible, all_visible)

    def __and__(self, other: Mask | Array) -> Mask:
        return _And(self, as_mask(other))

    def __rand__(self, other: Mask | Array) -> Mask:
        return _And(as_mask(other), self)

    def __or__(self, other: Mask | Array) -> Mask:
        return _Or(self, as_mask(other))

    def __ror__(self, other: Mask | Array) -> Mask:
        return _Or(as_mask(other), self)

    def __invert__(self) -> Mask:
        return _Not(self)


def _check_shape(
    array: Array | None,
    allowed: dict[str, tuple[int, ...]],
    where: str,
    shape: tuple[int, int, int, int],
) -> None:
    """Raise unless ``array`` (if any) has one of the ``allowed`` shapes (described by key)."""
    if array is None or tuple(array.shape) in allowed.values():
        return
    expected = " or ".join(
        f"{name} = {value}" if value else name for name, value in allowed.items()
    )
    raise ValueError(
        f"{where} has shape {tuple(array.shape)}, expected {expected} for attention of shape "
        f"[B, N, T, S] = {tuple(shape)}"
    )


def _check_lengths(array: Array | None, where: str, shape: tuple[int, int, int, int]) -> None:
    """Per-example values: one for all examples, or ``[B]``."""
    _check_shape(array, {"a scalar": (), "[B]": (shape[0],)}, where, shape)


# --------------------------------------------------------------------------- combinators


@_pytree()
@dataclasses.dataclass(frozen=True, eq=False)
class _And(Mask):
    left: Mask
    right: Mask

    def rule(self, b, h, q_idx, kv_idx):
        return self.left.rule(b, h, q_idx, kv_idx) & self.right.rule(b, h, q_idx, kv_idx)

    def factors(self):
        return self.left.factors() & self.right.factors()

    def check(self, shape):
        self.left.check(shape)
        self.right.check(shape)

    def _tile_rule(self, *args):
        a, c = self.left._tile_rule(*args), self.right._tile_rule(*args)
        return TileSummary(a.any_visible & c.any_visible, a.all_visible & c.all_visible)


@_pytree()
@dataclasses.dataclass(frozen=True, eq=False)
class _Or(Mask):
    left: Mask
    right: Mask

    def rule(self, b, h, q_idx, kv_idx):
        return self.left.rule(b, h, q_idx, kv_idx) | self.right.rule(b, h, q_idx, kv_idx)

    def check(self, shape):
        self.left.check(shape)
        self.right.check(shape)

    def _tile_rule(self, *args):
        a, c = self.left._tile_rule(*args), self.right._tile_rule(*args)
        return TileSummary(a.any_visible | c.any_visible, a.all_visible | c.all_visible)


@_pytree()
@dataclasses.dataclass(frozen=True, eq=False)
class _Not(Mask):
    inner: Mask

    def rule(self, b, h, q_idx, kv_idx):
        return ~self.inner.rule(b, h, q_idx, kv_idx)

    def check(self, shape):
        self.inner.check(shape)

    def _tile_rule(self, *args):
        s = self.inner._tile_rule(*args)
        return TileSummary(~s.all_visible, ~s.any_visible)


# --------------------------------------------------------------------------- position masks


@_pytree("offset")
@dataclasses.dataclass(frozen=True, eq=False)
class _Causal(Mask):
    offset: int

    def rule(self, b, h, q_idx, kv_idx):
        return kv_idx <= q_idx + self.offset

    def factors(self):
        return Factors(right=self.offset)

    def _tile_rule(self, b, h, q_first, q_last, kv_first, kv_last, shape, tiles):
        return TileSummary(kv_first <= q_last + self.offset, kv_last <= q_first + self.offset)


@_pytree()
@dataclasses.dataclass(frozen=True, eq=False)
class _ExampleCausal(Mask):
    offsets: Array  # [B] or scalar int

    def rule(self, b, h, q_idx, kv_idx):
        return kv_idx <= q_idx + _per_example(self.offsets, b)

    def check(self, shape):
        _check_lengths(self.offsets, "causal: offset", shape)

    def _tile_rule(self, b, h, q_first, q_last, kv_first, kv_last, shape, tiles):
        offset = _per_example(self.offsets, b)
        return TileSummary(kv_first <= q_last + offset, kv_last <= q_first + offset)


def causal(offset: int | Array = 0) -> Mask:
    """Query ``i`` sees key ``j`` iff ``j <= i + offset``.

    ``offset = S - T`` aligns the last query with the last key (a chunk after a cache prefix).
    ``offset`` may be an int array ``[B]`` (one per example, may be traced): query ``i`` of
    example ``b`` then sits at position ``offset[b] + i``, as in batched KV-cache decoding.
    """
    if isinstance(offset, int | np.integer):
        return _Causal(int(offset))
    return _ExampleCausal(_index_array(offset, "causal: offset", 1))


@_pytree("left", "right")
@dataclasses.dataclass(frozen=True, eq=False)
class _Window(Mask):
    left: int | None
    right: int | None

    def rule(self, b, h, q_idx, kv_idx):
        out = (q_idx >= 0) & (kv_idx >= 0)
        if self.left is not None:
            out = out & (kv_idx >= q_idx - self.left)
        if self.right is not None:
            out = out & (kv_idx <= q_idx + self.right)
        return out

    def factors(self):
        return Factors(left=self.left, right=self.right)

    def _tile_rule(self, b, h, q_first, q_last, kv_first, kv_last, shape, tiles):
        any_visible = all_visible = np.bool_(True)
        if self.left is not None:
            any_visible = any_visible & (kv_last >= q_first - self.left)
            all_visible = all_visible & (kv_first >= q_last - self.left)
        if self.right is not None:
            any_visible = any_visible & (kv_first <= q_last + self.right)
            all_visible = all_visible & (kv_last <= q_first + self.right)
        return TileSummary(any_visible, all_visible)


def sliding_window(left: int | None, right: int | None = 0) -> Mask:
    """Query ``i`` sees key ``j`` iff ``i - left <= j <= i + right`` (both ends inclusive).

    Same meaning as ``local_window_size=(left, right)`` in ``jax.nn.dot_product_attention``;
    ``None`` leaves that side unbounded. The default ``right=0`` is a causal window that sees
    ``left + 1`` keys.
    """
    for name, value in (("left", left), ("right", right)):
        if value is not None and (not isinstance(value, int | np.integer) or value < 0):
            raise ValueError(
                f"sliding_window: {name} must be a non-negative int or None, got {value!r}"
            )
    return _Window(left, right)


@_pytree("size")
@dataclasses.dataclass(frozen=True, eq=False)
class _Chunked(Mask):
    size: int

    def rule(self, b, h, q_idx, kv_idx):
        return q_idx // self.size == kv_idx // self.size

    def _tile_rule(self, b, h, q_first, q_last, kv_first, kv_last, shape, tiles):
        s = self.size
        any_visible = (kv_first // s <= q_last // s) & (q_first // s <= kv_last // s)
        one_chunk = (q_first // s == q_last // s) & (kv_first // s == kv_last // s)
        return TileSummary(any_visible, one_chunk & (q_first // s == kv_first // s))


def chunked(size: int) -> Mask:
    """Block-diagonal: query ``i`` sees key ``j`` iff ``i // size == j // size``.

    Combine with :func:`causal` for chunked causal attention (``causal() & chunked(512)``).
    """
    if not isinstance(size, int | np.integer) or size < 1:
        raise ValueError(f"chunked: size must be a positive int, got {size!r}")
    return _Chunked(int(size))


@_pytree("stride")
@dataclasses.dataclass(frozen=True, eq=False)
class _Strided(Mask):
    stride: int

    def rule(self, b, h, q_idx, kv_idx):
        distance = q_idx - kv_idx
        return (abs(distance) < self.stride) | (distance % self.stride == 0)


def strided(stride: int) -> Mask:
    """Sparse-Transformer strided pattern (Child et al. 2019): query ``i`` sees key ``j`` iff
    ``|i - j| < stride`` (the local band) or ``(i - j) % stride == 0`` (the strided columns).

    The paper's autoregressive form is ``causal() & strided(stride)``.
    """
    if not isinstance(stride, int | np.integer) or stride < 1:
        raise ValueError(f"strided: stride must be a positive int, got {stride!r}")
    return _Strided(int(stride))


@_pytree("num_global")
@dataclasses.dataclass(frozen=True, eq=False)
class _GlobalTokens(Mask):
    num_global: int

    def rule(self, b, h, q_idx, kv_idx):
        return (q_idx < self.num_global) | (kv_idx < self.num_global)

    def _tile_rule(self, b, h, q_first, q_last, kv_first, kv_last, shape, tiles):
        n = self.num_global
        return TileSummary((q_first < n) | (kv_first < n), (q_last < n) | (kv_last < n))


def global_tokens(num_global: int) -> Mask:
    """Longformer-style global attention: the first ``num_global`` positions see every key and
    are seen by every query. Combine with a local pattern: ``sliding_window(64, 64) |
    global_tokens(1)``."""
    if not isinstance(num_global, int | np.integer) or num_global < 0:
        raise ValueError(
            f"global_tokens: num_global must be a non-negative int, got {num_global!r}"
        )
    return _GlobalTokens(int(num_global))


# --------------------------------------------------------------------------- data masks


def _index_array(values: Array, where: str, max_ndim: int) -> Array:
    """``values`` as an int array of rank <= ``max_ndim``, NumPy or jax as given."""
    values = _host_or_jax(values)
    if values.ndim > max_ndim or not jnp.issubdtype(values.dtype, jnp.integer):
        raise ValueError(
            f"{where} must be an int array of rank <= {max_ndim}, "
            f"got {values.dtype}{list(values.shape)}"
        )
    return values


def _per_example(values: Array, b: Array) -> Array:
    """``values[b]`` for per-example values ``[B]``; scalars apply to every example."""
    return _lookup(values, b) if values.ndim == 1 else values


@_pytree()
@dataclasses.dataclass(frozen=True, eq=False)
class _Padding(Mask):
    q_lengths: Array | None
    kv_lengths: Array | None

    def rule(self, b, h, q_idx, kv_idx):
        out = q_idx >= 0
        if self.q_lengths is not None:
            out = out & (q_idx < _per_example(self.q_lengths, b))
        if self.kv_lengths is not None:
            out = out & (kv_idx < _per_example(self.kv_lengths, b))
        return out

    def factors(self):
        return Factors(q_lengths=self.q_lengths, kv_lengths=self.kv_lengths)

    def check(self, shape):
        _check_lengths(self.q_lengths, "padding: q_lengths", shape)
        _check_lengths(self.kv_lengths, "padding: kv_lengths", shape)

    def _tile_rule(self, b, h, q_first, q_last, kv_first, kv_last, shape, tiles):
        any_visible = all_visible = np.bool_(True)
        if self.q_lengths is not None:
            q_len = _per_example(self.q_lengths, b)
            any_visible = any_visible & (q_first < q_len)
            all_visible = all_visible & (q_last < q_len)
        if self.kv_lengths is not None:
            kv_len = _per_example(self.kv_lengths, b)
            any_visible = any_visible & (kv_first < kv_len)
            all_visible = all_visible & (kv_last < kv_len)
        return TileSummary(any_visible, all_visible)


def padding(q_lengths: Array | None = None, kv_lengths: Array | None = None) -> Mask:
    """Per-example valid lengths ``[B]`` (or one int for all): query ``i`` and key ``j`` of
    example ``b`` are real iff
    ``i < q_lengths[b]`` and ``j < kv_lengths[b]``. Padded queries see nothing, so their output is
    zero. Lengths may be traced under ``jit``."""
    if q_lengths is None and kv_lengths is None:
        raise ValueError("padding: give q_lengths, kv_lengths or both")
    q_lengths = None if q_lengths is None else _index_array(q_lengths, "padding: q_lengths", 1)
    kv_lengths = None if kv_lengths is None else _index_array(kv_lengths, "padding: kv_lengths", 1)
    return _Padding(q_lengths, kv_lengths)


@_pytree()
@dataclasses.dataclass(frozen=True, eq=False)
class _Segments(Mask):
    q_ids: Array
    kv_ids: Array

    def rule(self, b, h, q_idx, kv_idx):
        return _lookup(self.q_ids, b, q_idx) == _lookup(self.kv_ids, b, kv_idx)

    def check(self, shape):
        B, _, T, S = shape
        _check_shape(self.q_ids, {"[B, T]": (B, T)}, "segments: q_ids", shape)
        _check_shape(self.kv_ids, {"[B, S]": (B, S)}, "segments: kv_ids", shape)

    def _tile_rule(self, b, h, q_first, q_last, kv_first, kv_last, shape, tiles):
        # Equal ids are only possible where the tiles' id ranges overlap; a tile is fully visible
        # when both tiles hold a single, equal id.
        _, _, T, S = shape
        q_tile, kv_tile = tiles
        q_min, q_max = _tile_min_max(self.q_ids, T, q_tile)  # [B, nq]
        kv_min, kv_max = _tile_min_max(self.kv_ids, S, kv_tile)  # [B, nk]
        q_min, q_max = q_min[:, None, :, None], q_max[:, None, :, None]
        kv_min, kv_max = kv_min[:, None, None, :], kv_max[:, None, None, :]
        any_visible = (q_min <= kv_max) & (kv_min <= q_max)
        all_visible = (q_min == q_max) & (kv_min == kv_max) & (q_min == kv_min)
        return TileSummary(any_visible, all_visible)


def _tile_min_max(ids: Array, length: int, tile: int) -> tuple[Array, Array]:
    """Smallest and largest id in each tile, ``[B, num_tiles]`` each (NumPy for NumPy ids)."""
    n = -(-length // tile)
    pad = n * tile - length
    xp = np if _is_host(ids) else jnp
    tiled = xp.pad(ids, ((0, 0), (0, pad)), mode="edge").reshape(ids.shape[0], n, tile)
    return tiled.min(axis=-1), tiled.max(axis=-1)


def segments(q_ids: Array, kv_ids: Array | None = None) -> Mask:
    """Packed sequences: query ``i`` sees key ``j`` iff ``q_ids[b, i] == kv_ids[b, j]``.

    ``q_ids`` is an int array ``[B, T]`` (``kv_ids`` ``[B, S]``, default ``q_ids``). Give padding
    its own id and add :func:`padding` if padded queries must output zero. NumPy ids give a static
    mask (kernels skip tiles at trace time); jax ids may be traced under ``jit``.
    """
    q_ids = _host_or_jax(q_ids)
    kv_ids = q_ids if kv_ids is None else _host_or_jax(kv_ids)
    for name, ids in (("q_ids", q_ids), ("kv_ids", kv_ids)):
        if ids.ndim != 2 or not jnp.issubdtype(ids.dtype, jnp.integer):
            raise ValueError(
                f"segments: {name} must be an int array [B, length], "
                f"got {ids.dtype}{list(ids.shape)}"
            )
    if q_ids.shape[0] != kv_ids.shape[0]:
        raise ValueError(f"segments: q_ids {q_ids.shape} and kv_ids {kv_ids.shape} differ in batch")
    return _Segments(q_ids, kv_ids)


@_pytree()
@dataclasses.dataclass(frozen=True, eq=False)
class _KeyPrefix(Mask):
    prefix_lengths: Array

    def rule(self, b, h, q_idx, kv_idx):
        return (kv_idx < _per_example(self.prefix_lengths, b)) | (q_idx < 0)

    def check(self, shape):
        _check_lengths(self.prefix_lengths, "prefix_lm: prefix_lengths", shape)

    def _tile_rule(self, b, h, q_first, q_last, kv_first, kv_last, shape, tiles):
        prefix = _per_example(self.prefix_lengths, b)
        return TileSummary((kv_first < prefix) | (q_first < 0), (kv_last < prefix) | (q_last < 0))


def prefix_lm(prefix_lengths: Array | int) -> Mask:
    """Prefix-LM: every query sees the first ``prefix_lengths[b]`` keys (bidirectional prefix)
    and, beyond them, keys up to itself (causal). ``prefix_lengths`` is an int or ``[B]``."""
    return causal() | _KeyPrefix(_index_array(prefix_lengths, "prefix_lm: prefix_lengths", 1))


@_pytree("block_size", "keep")
@dataclasses.dataclass(frozen=True, eq=False)
class _RandomBlocks(Mask):
    block_size: int
    keep: tuple[tuple[bool, ...], ...]  # [num_q_blocks][num_kv_blocks]; a tuple so it hashes
    # The same pattern as an array leaf, read on traced indices: kernels pass leaves in as inputs
    # (a Pallas kernel cannot capture a constant table). Host indices read the static ``keep``,
    # so dense() and tile summaries stay NumPy even when the mask is a jit argument.
    table: Array

    def rule(self, b, h, q_idx, kv_idx):
        host = _is_host(q_idx, kv_idx)
        xp = np if host else jnp
        keep = np.asarray(self.keep, dtype=bool) if host else jnp.asarray(self.table)
        # Positions past the lengths the pattern was drawn for reuse the last block.
        q_block = xp.minimum(q_idx // self.block_size, keep.shape[0] - 1)
        kv_block = xp.minimum(kv_idx // self.block_size, keep.shape[1] - 1)
        return keep[q_block, kv_block]


def random_blocks(
    q_len: int, kv_len: int, block_size: int, blocks_per_row: int, *, seed: int = 0
) -> Mask:
    """BigBird-style random attention: each query block sees ``blocks_per_row`` key blocks drawn
    without replacement from a generator seeded with ``seed`` (deterministic, static).

    Combine with a window and global tokens for the full BigBird pattern.
    """
    if block_size < 1 or blocks_per_row < 0:
        raise ValueError(
            f"random_blocks: need block_size >= 1 and blocks_per_row >= 0, "
            f"got {block_size}, {blocks_per_row}"
        )
    nq, nk = -(-q_len // block_size), -(-kv_len // block_size)
    if blocks_per_row > nk:
        raise ValueError(
            f"random_blocks: blocks_per_row={blocks_per_row} exceeds the {nk} key blocks"
        )
    generator = np.random.default_rng(seed)
    keep = np.zeros((nq, nk), dtype=bool)
    for row in range(nq):
        keep[row, generator.choice(nk, size=blocks_per_row, replace=False)] = True
    return _RandomBlocks(int(block_size), tuple(map(tuple, keep.tolist())), keep)


# --------------------------------------------------------------------------- arrays and functions


def _broadcast_index(idx: Array, size: int) -> Array:
    return idx if size != 1 else idx * 0


@_pytree()
@dataclasses.dataclass(frozen=True, eq=False)
class _ArrayMask(Mask):
    array: Array  # bool, rank 4, broadcastable to [B, N, T, S]

    def rule(self, b, h, q_idx, kv_idx):
        indices = (b, h, q_idx, kv_idx)
        return _lookup(
            self.array,
            *(_broadcast_index(i, n) for i, n in zip(indices, self.array.shape, strict=True)),
        )

    def dense(self, shape):
        self.check(shape)
        return self.array

    def check(self, shape):
        _check_broadcastable(self.array, _check_dims(shape), "mask")

    def factors(self):
        if self.array.shape[1:3] == (1, 1):  # [B | 1, 1, 1, S]: depends on the key alone
            return Factors(kv_valid=self.array[:, 0, 0, :])
        return Factors(rest=self)


def _check_broadcastable(array: Array, shape: tuple[int, ...], name: str) -> None:
    if array.ndim > 4 or any(
        a not in (1, s) for a, s in zip(array.shape[::-1], shape[::-1], strict=False)
    ):
        raise ValueError(
            f"{name} of shape {tuple(array.shape)} does not broadcast to [B, N, T, S] = {shape}"
        )


def from_array(array: Array) -> Mask:
    """A mask from a boolean array broadcastable to ``[B, N, T, S]`` (rank <= 4, missing leading
    axes are added)."""
    array = _host_or_jax(array)
    if array.dtype != bool:
        raise TypeError(f"mask array must be boolean (True = may attend), got dtype {array.dtype}")
    if array.ndim > 4:
        raise ValueError(f"mask array must have rank <= 4 ([B, N, T, S]), got shape {array.shape}")
    return _ArrayMask(array.reshape((1,) * (4 - array.ndim) + array.shape))


@_pytree("fn")
@dataclasses.dataclass(frozen=True, eq=False)
class _FnMask(Mask):
    fn: Callable[[Array, Array, Array, Array], Array]

    def rule(self, b, h, q_idx, kv_idx):
        return self.fn(b, h, q_idx, kv_idx)


def from_fn(fn: Callable[[Array, Array, Array, Array], Array]) -> Mask:
    """A mask from a rule ``fn(b, h, q_idx, kv_idx) -> bool`` on broadcasting int arrays.

    Write it with operators (``<``, ``&``, ``%``) so it works on NumPy and traced indices alike.
    Tile summaries evaluate it densely; subclass :class:`Mask` for an interval rule.
    """
    if not callable(fn):
        raise TypeError(f"from_fn needs a callable (b, h, q_idx, kv_idx) -> bool, got {fn!r}")
    return _FnMask(fn)


def as_mask(mask: Mask | Array) -> Mask:
    """``mask`` itself if it is a :class:`Mask`, else :func:`from_array` of it."""
    return mask if isinstance(mask, Mask) else from_array(mask)


def as_array(mask: Mask | Array | None, shape: tuple[int, int, int, int]) -> Array | None:
    """Dense boolean array broadcastable to ``shape = (B, N, T, S)`` (rank 4), or ``None``."""
    if mask is None:
        return None
    return as_mask(mask).dense(shape)


def zero_rows(x: Array, valid_bl: Array | None) -> Array:
    """``x [B, L, ...]`` with the rows where ``valid_bl [B, L]`` is False set to 0 (``x`` for
    ``None``): a select, not a product, so a NaN or inf there is gone rather than 0 * NaN.

    With :meth:`Factors.queries` and :meth:`Factors.keys` it clears positions a mask hides from
    every pairing (padded queries, padded keys and values)."""
    if valid_bl is None:
        return x
    return jnp.where(valid_bl.reshape(valid_bl.shape + (1,) * (x.ndim - 2)), x, 0)


def clear_hidden(mask: Mask | None, q: Array, k: Array, v: Array) -> tuple[Array, Array, Array]:
    """``q [B, T, N, ...]``, ``k`` and ``v [B, S, K, ...]`` with the rows that ``mask`` hides
    from every pairing set to 0: queries outside its query lengths and keys outside its
    key-only factors (:meth:`Factors.queries`, :meth:`Factors.keys`).

    Their weights are 0 anyway, but a NaN or inf there would still reach the outputs and
    gradients of the whole example as 0 * NaN in the matmuls; other masked positions are left
    as they are."""
    if mask is None:
        return q, k, v
    factors = mask.factors()
    shape = (q.shape[0], q.shape[2], q.shape[1], k.shape[1])
    keys = factors.keys(shape)
    return zero_rows(q, factors.queries(shape)), zero_rows(k, keys), zero_rows(v, keys)
