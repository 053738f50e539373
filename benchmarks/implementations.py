"""The attention implementations the benchmark compares, as ``fn(q, k, v) -> out``.

All compute softmax(q k^T / sqrt(H)) v with an optional causal mask (query i sees keys
j <= i), except "linear" (elu + 1 features) and "performer" (FAVOR+, 256 random features),
which approximate it. "dense", "chunked", "pallas", "cudnn" and "auto" are
``attn.attend(implementation=...)`` ("cudnn" needs a GPU and 16-bit inputs; "auto" is attend's
own choice); "jax.nn" is ``jax.nn.dot_product_attention`` itself (its cuDNN path on GPU). Peer
libraries (flax, tokamax) are imported lazily, only when their case runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax

import attn
from attn import masks, variants

__all__ = ["IMPLEMENTATIONS", "make"]

Fn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def _attend(implementation: str, causal: bool) -> Fn:
    mask = masks.causal() if causal else None
    return functools.partial(attn.attend, mask=mask, implementation=implementation)


def _jax_nn(causal: bool) -> Fn:
    implementation = "cudnn" if jax.default_backend() == "gpu" else "xla"
    return functools.partial(
        jax.nn.dot_product_attention, is_causal=causal, implementation=implementation
    )


def _flax_nnx(causal: bool) -> Fn:
    from flax import nnx

    def fn(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        # nnx takes a mask array, not a causal flag, in this version's functional API.
        mask = nnx.make_causal_mask(q[..., 0, 0]) if causal else None
        return nnx.dot_product_attention(q, k, v, mask=mask)

    return fn


def _tokamax(causal: bool) -> Fn:
    import tokamax
    from absl import flags

    # tokamax reads its settings from absl flags, parsing sys.argv (our own arguments) unless
    # the flags are already parsed: keep its defaults.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()

    # On CPU its only kernel is the chunked XLA one; elsewhere let it pick its Pallas kernels.
    implementation = "xla_chunked" if jax.default_backend() == "cpu" else None
    return functools.partial(
        tokamax.dot_product_attention, is_causal=causal, implementation=implementation
    )


def _linear(causal: bool) -> Fn:
    return functools.partial(variants.linear_attention, feature_map="elu", causal=causal)


def _performer(causal: bool) -> Fn:
    def fn(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        # M = 256 features for H = 64, about the paper's H log H.
        projection = variants.random_features(jax.random.key(0), 256, q.shape[-1])
        return variants.performer_attention(q, k, v, projection, causal=causal)

    return fn


IMPLEMENTATIONS: dict[str, Callable[[bool], Fn]] = {
    "dense": functools.partial(_attend, "dense"),
    "chunked": functools.partial(_attend, "chunked"),
    "pallas": functools.partial(_attend, "pallas"),
    "cudnn": functools.partial(_attend, "cudnn"),
    "auto": functools.partial(_attend, "auto"),
    "jax.nn": _jax_nn,
    "flax.nnx": _flax_nnx,
    "tokamax": _tokamax,
    "linear": _linear,
    "performer": _performer,
}


def make(name: str, causal: bool) -> Fn:
    """The implementation ``name`` (a key of :data:`IMPLEMENTATIONS`)."""
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"unknown implementation {name!r}; choose from {sorted(IMPLEMENTATIONS)}")
    return IMPLEMENTATIONS[name](causal)
