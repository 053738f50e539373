"""Timing and memory measurement: interleaved repeats, medians, compiled memory analysis."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["compile_with_memory", "interleaved_medians", "matmul_case"]


def compile_with_memory(fn: Callable[..., Any], *args: Any) -> tuple[Callable[..., Any], int]:
    """``fn`` compiled for ``args`` and its temporary memory in bytes (XLA's memory analysis)."""
    compiled = jax.jit(fn).lower(*args).compile()
    analysis = compiled.memory_analysis()
    temp = int(analysis.temp_size_in_bytes) if analysis is not None else -1
    return compiled, temp


def _time_once(fn: Callable[..., Any], args: Sequence[Any]) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def interleaved_medians(
    cases: dict[str, tuple[Callable[..., Any], Sequence[Any]]], *, repeats: int, warmup: int = 1
) -> dict[str, float]:
    """Median seconds per case. Every round runs each case in turn, so that the load of a shared
    machine drifts over all cases alike instead of biasing whichever ran last. Within a round a
    case runs twice and only the second call is timed: work that the previous case leaves
    behind after its result is ready (freeing a large temporary buffer took about 50 ms after
    dense attention at T=4096) then lands on the untimed call, and each timed call carries the
    leftovers of its own kind instead."""
    for fn, args in cases.values():
        for _ in range(warmup):
            jax.block_until_ready(fn(*args))
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, (fn, args) in cases.items():
            _time_once(fn, args)
            samples[name].append(_time_once(fn, args))
    return {name: statistics.median(times) for name, times in samples.items()}


def matmul_case(
    size: int, dtype: jnp.dtype = jnp.float32
) -> tuple[Callable[..., Any], tuple[jax.Array, jax.Array]]:
    """A compiled ``[size, size] @ [size, size]`` in ``dtype`` and its operands (``2 size^3``
    FLOPs): the roofline, timed alongside the cases it is compared with."""
    a = jax.random.normal(jax.random.key(0), (size, size), dtype)
    b = jax.random.normal(jax.random.key(1), (size, size), dtype)
    fn, _ = compile_with_memory(jnp.matmul, a, b)
    return fn, (a, b)
