"""Position information for attention: absolute encodings, rotary embeddings, relative biases.

* :func:`sinusoidal` -- fixed absolute encodings added to token embeddings (Vaswani et al. 2017).
* :func:`rope` -- rotary position embedding applied to q and k before scoring (Su et al. 2021).
* :func:`alibi_slopes`, :func:`alibi_bias` -- linear distance biases (Press et al. 2022).
* :func:`t5_relative_position_bucket`, :func:`t5_relative_bias` -- bucketed learned relative
  biases (Raffel et al. 2020).
* :func:`alibi_rule`, :func:`t5_relative_rule` -- the same biases as elementwise rules
  ``(b, h, q_idx, kv_idx) -> float``, evaluated per tile by chunked kernels.

Biases are returned as ``[1, N, T, S]`` (or ``[B, N, T, S]`` for per-example query offsets), to be
passed as ``bias=`` to :func:`attn.attend`, which adds them to the logits before masking.
Everything here is a pure function of arrays; learned tables and slopes belong to modules.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = Any  # jax.Array, np.ndarray or anything jnp.asarray accepts.

__all__ = [
    "AlibiRule",
    "T5RelativeRule",
    "alibi_bias",
    "alibi_rule",
    "alibi_slopes",
    "rope",
    "sinusoidal",
    "sinusoidal_2d",
    "t5_relative_bias",
    "t5_relative_position_bucket",
    "t5_relative_rule",
]


# ----------------------------------------------------------------------------- helpers


def _is_int(value: Any) -> bool:
    # bool is an int subclass, but `num_heads=True` is a bug, not one head.
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_base(base: Any) -> float:
    if not isinstance(base, int | float | np.integer | np.floating) or isinstance(base, bool):
        raise TypeError(f"base must be a number, got {type(base).__name__} ({base!r})")
    if not base > 1.0:
        # base <= 1 makes the frequencies grow with the feature index (or all equal 1),
        # which destroys the multi-scale property these encodings rely on.
        raise ValueError(f"base must be > 1, got {base}")
    return float(base)


def _as_real_positions(name: str, positions: Array) -> jax.Array:
    positions = jnp.asarray(positions)
    if not (
        jnp.issubdtype(positions.dtype, jnp.integer)
        or jnp.issubdtype(positions.dtype, jnp.floating)
    ):
        raise TypeError(f"{name} must be an integer (or float) array, got dtype {positions.dtype}")
    return positions


def _inverse_frequencies(num_freqs: int, denom: int, base: float) -> jax.Array:
    # theta_i = base^(-2i/denom), computed in float64 on the host so the constants are exact to
    # float32 rounding whatever the backend's pow precision.
    exponents = np.arange(num_freqs, dtype=np.float64) * 2.0 / denom
    return jnp.asarray(base**-exponents, dtype=jnp.float32)


def _check_q_offset(q_offset: Array) -> jax.Array:
    q_offset = jnp.asarray(q_offset)
    if not jnp.issubdtype(q_offset.dtype, jnp.integer):
        raise TypeError(f"q_offset must be an int or an integer array, got dtype {q_offset.dtype}")
    if q_offset.ndim > 1:
        raise ValueError(
            f"q_offset must be a scalar or per-example [B], got shape {tuple(q_offset.shape)}"
        )
    return q_offset.astype(jnp.int32)


def _query_positions(q_len: int, q_offset: jax.Array) -> jax.Array:
    """Absolute query positions ``[B', T]`` (B' = 1, or B for per-example offsets ``[B]``)."""
    return q_offset.reshape(-1, 1) + jnp.arange(q_len, dtype=jnp.int32)[None, :]


# ----------------------------------------------------------------------------- sinusoidal


def sinusoidal(positions: Array | int, dim: int, *, base: float = 10000.0) -> jax.Array:
    """Sinusoidal absolute position encodings (Vaswani et al. 2017), float32 ``[..., dim]``.

    ``positions`` is an integer array of any shape ``[...]`` (a 0-d array gives ``[dim]``), or a
    Python or NumPy int ``length`` meaning ``arange(length)`` (giving ``[length, dim]``).

    With ``w_i = base^(-2i/dim)`` for ``i < dim/2``, the layout is **concatenated**, not
    interleaved: ``out[..., i] = sin(p * w_i)`` and ``out[..., dim/2 + i] = cos(p * w_i)``
    (the tensor2tensor layout). The paper interleaves (sin at 2i, cos at 2i+1); the two differ
    by a fixed permutation of features, which a following linear layer absorbs.
    """
    dim = _check_positive_int("dim", dim, minimum=2)
    if dim % 2:
        raise ValueError(f"dim must be even (half sin, half cos), got {dim}")
    base = _check_base(base)
    if _is_int(positions):
        positions = jnp.arange(_check_positive_int("positions (length)", positions, minimum=0))
    return _sinusoidal(_as_real_positions("positions", positions), dim, base)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _sinusoidal(positions: jax.Array, dim: int, base: float) -> jax.Array:
    inv_freq = _inverse_frequencies(dim // 2, dim, base)
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [..., dim/2]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def sinusoidal_2d(height: int, width: int, dim: int, *, base: float = 10000.0) -> jax.Array:
    """2-D sinusoidal encodings of a ``height x width`` grid in row-major order, float32
    ``[height * width, dim]``: the first ``dim / 2`` features are :func:`sinusoidal` of the
    row, the last ``dim / 2`` of the column (the factorised layout of MAE and ViT baselines),
    so neighbouring patches get similar codes along each axis. ``dim`` must be a multiple of 4.
    """
    height = _check_positive_int("height", height)
    width = _check_positive_int("width", width)
    dim = _check_positive_int("dim", dim, minimum=4)
    if dim % 4:
        raise ValueError(f"dim must be a multiple of 4 (sin and cos per axis), got {dim}")
    rows_p, columns_p = np.divmod(np.arange(height * width), width)
    return jnp.concatenate(
        [
            sinusoidal(jnp.asarray(rows_p), dim // 2, base=base),
            sinusoidal(jnp.asarray(columns_p), dim // 2, base=base),
        ],
        axis=-1,
    )


# ----------------------------------------------------------------------------- rope


def rope(
    x: Array,
    positions: Array,
    *,
    base: float = 10000.0,
    rotary_dim: int | None = None,
    interleaved: bool = False,
) -> jax.Array:
    """Rotary position embedding (Su et al. 2021) of ``x`` ``[B, T, N, H]``; same shape and dtype.

    Apply it to queries and keys (not values) before scoring: feature pairs are rotated by
    ``p * theta_i`` with ``theta_i = base^(-2i/rotary_dim)``, so ``<rope(q, m), rope(k, n)>``
    depends on the positions only through ``m - n``.

    Args:
      x: ``[B, T, N, H]`` queries or keys (any float dtype).
      positions: integer positions ``[T]`` (shared by the batch) or ``[B, T]`` (per example, e.g.
        cache offsets while decoding); ``[1, T]`` broadcasts. May be traced. Float positions are
        accepted too (position interpolation).
      base: wavelength base.
      rotary_dim: rotate only the first ``rotary_dim`` features (even, ``<= H``) and pass the rest
        through unchanged (partial rotary, as in GPT-NeoX and Phi). Default ``H``.
      interleaved: ``False`` pairs feature ``i`` with ``i + rotary_dim/2`` (the "rotate half"
        layout of GPT-NeoX/LLaMA checkpoints); ``True`` pairs ``(2i, 2i+1)`` (the RoFormer
        paper's layout). The two are the same rotation up to a permutation of features.

    Angles and the rotation are computed in float32 (or wider) and the result is cast back to
    ``x.dtype``: bfloat16 angles lose whole radians at positions in the thousands.
    """
    x = jnp.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"x must be [B, T, N, H] (rank 4), got shape {tuple(x.shape)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x must be a floating array, got dtype {x.dtype}")
    B, T, _, H = x.shape
    if rotary_dim is None:
        if H % 2:
            raise ValueError(
                f"rope needs an even head dim H, got x shape {tuple(x.shape)}; "
                "pass an even rotary_dim < H to rotate part of the features"
            )
        rotary_dim = H
    rotary_dim = _check_positive_int("rotary_dim", rotary_dim, minimum=2)
    if rotary_dim % 2 or rotary_dim > H:
        raise ValueError(
            f"rotary_dim must be even and <= H={H} (x shape {tuple(x.shape)}), got {rotary_dim}"
        )
    base = _check_base(base)

    positions = _as_real_positions("positions", positions)
    given_shape = tuple(positions.shape)
    if positions.ndim == 1:
        positions = positions[None, :]
    if positions.ndim != 2 or positions.shape[1] != T or positions.shape[0] not in (1, B):
        raise ValueError(
            f"positions must be [T] or [B, T] with B={B}, T={T} (x shape {tuple(x.shape)}), "
            f"got shape {given_shape}"
        )

    return _rope(x, positions, base, rotary_dim, bool(interleaved))


# One compiled program per shape instead of a dozen eagerly dispatched ops; inlined when the
# caller is itself under jit.
@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _rope(
    x: jax.Array, positions: jax.Array, base: float, rotary_dim: int, interleaved: bool
) -> jax.Array:
    H = x.shape[-1]
    compute_dtype = jnp.promote_types(x.dtype, jnp.float32)
    half = rotary_dim // 2
    inv_freq = _inverse_frequencies(half, rotary_dim, base).astype(compute_dtype)
    angles = positions.astype(compute_dtype)[:, :, None, None] * inv_freq  # [B', T, 1, half]
    cos, sin = jnp.cos(angles), jnp.sin(angles)

    x_rot = x[..., :rotary_dim].astype(compute_dtype)
    if interleaved:
        x1, x2 = x_rot[..., 0::2], x_rot[..., 1::2]
    else:
        x1, x2 = x_rot[..., :half], x_rot[..., half:]
    # 2-D rotation of each pair (x1, x2) by its angle.
    y1 = x1 * cos - x2 * sin
    y2 = x2 * cos + x1 * sin
    if interleaved:
        y = jnp.stack([y1, y2], axis=-1).reshape(*y1.shape[:-1], rotary_dim)
    else:
        y = jnp.concatenate([y1, y2], axis=-1)
    y = y.astype(x.dtype)
    if rotary_dim == H:
        return y
    return jnp.concatenate([y, x[..., rotary_dim:]], axis=-1)


# ----------------------------------------------------------------------------- alibi


def alibi_slopes(num_heads: int) -> jax.Array:
    """ALiBi head slopes (Press et al. 2022), float32 ``[num_heads]``.

    For ``n`` a power of two: the geometric sequence ``2^(-8/n), 2^(-16/n), ..., 2^(-8)``
    (``n = 8`` gives ``1/2, 1/4, ..., 1/256``). Otherwise, with ``p`` the largest power of two
    below ``n``: the ``p`` slopes for ``p`` heads, followed by the first ``n - p`` of every other
    slope for ``2p`` heads (indices 0, 2, 4, ...), as in the paper's reference code.
    """
    num_heads = _check_positive_int("num_heads", num_heads)

    def power_of_two_slopes(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]

    p = 1 << (num_heads.bit_length() - 1)  # largest power of two <= num_heads
    slopes = power_of_two_slopes(p)
    if p != num_heads:
        slopes += power_of_two_slopes(2 * p)[0::2][: num_heads - p]
    return jnp.asarray(slopes, dtype=jnp.float32)


def alibi_bias(
    num_heads_or_slopes: int | Array,
    q_len: int,
    kv_len: int,
    *,
    q_offset: int | Array = 0,
) -> jax.Array:
    """ALiBi bias ``-slope_h * |(i + q_offset) - j|``, float32 ``[1, N, T, S]``.

    ``num_heads_or_slopes`` is an int ``N`` (uses :func:`alibi_slopes`) or a slopes array ``[N]``
    (e.g. learned, may be traced). ``q_offset`` is the absolute position of query 0 relative to
    key 0 (the cache length while decoding); a ``[B]`` array of per-example offsets gives
    ``[B, N, T, S]``. It may be traced.

    The bias is symmetric in distance. Used with a causal mask it equals the paper's
    ``-slope * (i - j)`` on every visible entry; without one it is the symmetric bidirectional
    variant.
    """
    if _is_int(num_heads_or_slopes):
        slopes = alibi_slopes(num_heads_or_slopes)
    elif isinstance(num_heads_or_slopes, bool | float):
        raise TypeError(
            "num_heads_or_slopes must be an int or a [N] slopes array, "
            f"got {type(num_heads_or_slopes).__name__} ({num_heads_or_slopes!r})"
        )
    else:
        slopes = jnp.asarray(num_heads_or_slopes)
        if slopes.ndim != 1:
            raise ValueError(
                f"num_heads_or_slopes as an array must be [N], got shape {tuple(slopes.shape)}"
            )
        slopes = slopes.astype(jnp.float32)
    q_len = _check_positive_int("q_len", q_len)
    kv_len = _check_positive_int("kv_len", kv_len)

    q_offset = _check_q_offset(q_offset)
    return _alibi_bias(slopes, q_offset, q_len, kv_len)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _alibi_bias(slopes: jax.Array, q_offset: jax.Array, q_len: int, kv_len: int) -> jax.Array:
    q_pos = _query_positions(q_len, q_offset)  # [B', T]
    kv_pos = jnp.arange(kv_len, dtype=jnp.int32)
    # Distances in int32 first: exact, and float32 only once at the end.
    distance = jnp.abs(q_pos[:, :, None] - kv_pos[None, None, :]).astype(jnp.float32)
    return -slopes[None, :, None, None] * distance[:, None, :, :]


# ----------------------------------------------------------------------------- t5


def _check_t5_args(num_buckets: int, max_distance: int, bidirectional: bool) -> None:
    if not isinstance(bidirectional, bool):
        raise TypeError(f"bidirectional must be a bool, got {type(bidirectional).__name__}")
    num_buckets = _check_positive_int("num_buckets", num_buckets, minimum=4 if bidirectional else 2)
    if bidirectional and num_buckets % 2:
        raise ValueError(
            f"num_buckets must be even when bidirectional (half per direction), got {num_buckets}"
        )
    max_distance = _check_positive_int("max_distance", max_distance)
    max_exact = (num_buckets // 2 if bidirectional else num_buckets) // 2
    if max_distance <= max_exact:
        raise ValueError(
            f"max_distance must exceed the exact range {max_exact} "
            f"(num_buckets={num_buckets}, bidirectional={bidirectional}), got {max_distance}"
        )


def t5_relative_position_bucket(
    relative_position: Array,
    *,
    bidirectional: bool = True,
    num_buckets: int = 32,
    max_distance: int = 128,
) -> jax.Array:
    """T5 relative-position buckets (Raffel et al. 2020), int32, same shape as the input.

    ``relative_position = kv_idx - q_idx`` (negative: the key is in the past). When
    ``bidirectional``, buckets ``[0, num_buckets/2)`` hold past-or-present keys and
    ``[num_buckets/2, num_buckets)`` future keys; otherwise future keys all share bucket 0 with
    distance 0 (a causal mask hides them anyway). Within a direction with ``m`` buckets, distances
    below ``m/2`` get one bucket each; larger distances are log-spaced from ``m/2`` up to
    ``max_distance``, and everything at or beyond ``max_distance`` lands in the last bucket.
    """
    _check_t5_args(num_buckets, max_distance, bidirectional)
    relative_position = jnp.asarray(relative_position)
    if not jnp.issubdtype(relative_position.dtype, jnp.integer):
        raise TypeError(
            f"relative_position must be an integer array, got dtype {relative_position.dtype}"
        )
    return _t5_bucket(relative_position, bidirectional, num_buckets, max_distance)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _t5_bucket(
    relative_position: jax.Array, bidirectional: bool, num_buckets: int, max_distance: int
) -> jax.Array:
    relative_position = relative_position.astype(jnp.int32)
    if bidirectional:
        num_buckets //= 2
        bucket = jnp.where(relative_position > 0, num_buckets, 0).astype(jnp.int32)
        distance = jnp.abs(relative_position)
    else:
        bucket = jnp.zeros_like(relative_position)
        distance = jnp.maximum(-relative_position, 0)

    max_exact = num_buckets // 2
    # Same float32 operation order as the original Mesh TensorFlow code, so bucket boundaries
    # match pretrained T5 tables. The maximum keeps log() away from 0 in the masked-out branch.
    ratio = jnp.maximum(distance, max_exact).astype(jnp.float32) / max_exact
    log_scaled = (
        jnp.log(ratio) / jnp.float32(math.log(max_distance / max_exact)) * (num_buckets - max_exact)
    )
    large = jnp.minimum(max_exact + log_scaled.astype(jnp.int32), num_buckets - 1)
    return bucket + jnp.where(distance < max_exact, distance, large)


def t5_relative_bias(
    table: Array,
    q_len: int,
    kv_len: int,
    *,
    bidirectional: bool = True,
    max_distance: int = 128,
    q_offset: int | Array = 0,
) -> jax.Array:
    """T5 relative bias looked up from a learned ``table`` ``[num_buckets, N]``: ``[1, N, T, S]``.

    ``bias[0, h, i, j] = table[bucket(j - (i + q_offset)), h]`` with
    :func:`t5_relative_position_bucket` and ``num_buckets = table.shape[0]``. The result has the
    table's dtype and is differentiable in ``table``. ``q_offset`` is the absolute position of
    query 0 (the cache length while decoding); a ``[B]`` array of per-example offsets gives
    ``[B, N, T, S]``. It may be traced.
    """
    table = jnp.asarray(table)
    if table.ndim != 2:
        raise ValueError(f"table must be [num_buckets, N], got shape {tuple(table.shape)}")
    num_buckets = table.shape[0]
    _check_t5_args(num_buckets, max_distance, bidirectional)
    q_len = _check_positive_int("q_len", q_len)
    kv_len = _check_positive_int("kv_len", kv_len)

    q_offset = _check_q_offset(q_offset)
    return _t5_bias(table, q_offset, q_len, kv_len, bidirectional, max_distance)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _t5_bias(
    table: jax.Array,
    q_offset: jax.Array,
    q_len: int,
    kv_len: int,
    bidirectional: bool,
    max_distance: int,
) -> jax.Array:
    q_pos = _query_positions(q_len, q_offset)  # [B', T]
    kv_pos = jnp.arange(kv_len, dtype=jnp.int32)
    relative_bts = kv_pos[None, None, :] - q_pos[:, :, None]
    buckets_bts = _t5_bucket(relative_bts, bidirectional, table.shape[0], max_distance)
    values_btsn = jnp.take(table, buckets_bts, axis=0)
    return jnp.transpose(values_btsn, (0, 3, 1, 2))


# ----------------------------------------------------------------------------- elementwise rules
# The same biases as elementwise rules ``rule(b, h, q_idx, kv_idx) -> float``, so that a chunked
# kernel computes them per tile instead of reading an O(T * S) array. They are pytrees: learned
# slopes and tables are leaves and receive gradients through any implementation of attend.


def _offset_for(q_offset: jax.Array, b: Array) -> jax.Array:
    """``q_offset[b]`` for per-example offsets ``[B]``; a scalar offset applies to every example."""
    return q_offset[b] if q_offset.ndim == 1 else q_offset


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["slopes", "q_offset"], meta_fields=[]
)
@dataclasses.dataclass(frozen=True)
class AlibiRule:
    """``rule(b, h, i, j) = -slopes[h] * |i + q_offset[b] - j|`` (see :func:`alibi_rule`)."""

    slopes: jax.Array  # [N] float32
    q_offset: jax.Array  # int32 scalar or [B]

    def __call__(self, b: Array, h: Array, q_idx: Array, kv_idx: Array) -> jax.Array:
        position = jnp.asarray(q_idx, jnp.int32) + _offset_for(self.q_offset, b)
        # Distances in int32 first, as in alibi_bias, so both give bit-identical values.
        distance = jnp.abs(position - jnp.asarray(kv_idx, jnp.int32)).astype(jnp.float32)
        return -self.slopes[h] * distance


def alibi_rule(num_heads_or_slopes: int | Array, *, q_offset: int | Array = 0) -> AlibiRule:
    """ALiBi as an elementwise bias rule, equal to :func:`alibi_bias` entry by entry.

    Pass it as ``bias=`` to :func:`attn.attend`: the dense implementation evaluates it over the
    whole ``[B, N, T, S]`` grid, the chunked kernel per tile. Arguments as in
    :func:`alibi_bias`; learned ``[N]`` slopes receive gradients.
    """
    if _is_int(num_heads_or_slopes):
        slopes = alibi_slopes(num_heads_or_slopes)
    else:
        slopes = jnp.asarray(num_heads_or_slopes)
        if slopes.ndim != 1 or not jnp.issubdtype(slopes.dtype, jnp.floating):
            raise ValueError(
                "num_heads_or_slopes must be an int or a float [N] slopes array, got "
                f"{getattr(slopes, 'dtype', '')}{list(getattr(slopes, 'shape', ()))}"
            )
    return AlibiRule(slopes, _check_q_offset(q_offset))


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["table", "q_offset"],
    meta_fields=["bidirectional", "max_distance"],
)
@dataclasses.dataclass(frozen=True)
class T5RelativeRule:
    """``rule(b, h, i, j) = table[bucket(j - (i + q_offset[b])), h]`` (see
    :func:`t5_relative_rule`)."""

    table: jax.Array  # [num_buckets, N]
    q_offset: jax.Array  # int32 scalar or [B]
    bidirectional: bool
    max_distance: int

    def __call__(self, b: Array, h: Array, q_idx: Array, kv_idx: Array) -> jax.Array:
        position = jnp.asarray(q_idx, jnp.int32) + _offset_for(self.q_offset, b)
        relative = jnp.asarray(kv_idx, jnp.int32) - position
        bucket = _t5_bucket(relative, self.bidirectional, self.table.shape[0], self.max_distance)
        return self.table[bucket, h]


def t5_relative_rule(
    table: Array,
    *,
    bidirectional: bool = True,
    max_distance: int = 128,
    q_offset: int | Array = 0,
) -> T5RelativeRule:
    """T5 relative bias as an elementwise rule, equal to :func:`t5_relative_bias` entry by entry.

    ``table`` is ``[num_buckets, N]`` (learned; receives gradients). Pass the rule as ``bias=`` to
    :func:`attn.attend`; every implementation evaluates it where it needs it.
    """
    table = jnp.asarray(table)
    if table.ndim != 2:
        raise ValueError(f"table must be [num_buckets, N], got shape {tuple(table.shape)}")
    _check_t5_args(table.shape[0], max_distance, bidirectional)
    return T5RelativeRule(table, _check_q_offset(q_offset), bidirectional, max_distance)
