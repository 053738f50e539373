"""Ring attention on fake CPU devices against one device: time, temporary memory, skipped blocks.

    python -m benchmarks.ring --length 2048 --devices 4 8

Starts JAX with 8 fake CPU devices (``XLA_FLAGS``, unless already set). For each device count
``n`` the sequence is split over a mesh axis ``"context"`` of ``n`` devices; "chunked" and
"dense" run on one device. Every case is forward+backward (a VJP with a random cotangent),
compiled once, timed in interleaved rounds (medians). Fake devices share the machine's cores,
so the ring cannot be faster here: its time over chunked's is the ring's overhead (blocks,
merges, sends, the backward's recomputed block forward), not a speed-up. Temporary memory is
XLA's compiled memory analysis, per device for the ring. Prints a Markdown table.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import argparse
import functools
from typing import Any

import jax
import numpy as np

import attn
from attn import masks
from attn.kernels import ring
from benchmarks import timing

MIB = 2.0**20


def _forward_backward(implementation: str, mask: masks.Mask | None) -> Any:
    def run(q, k, v, cotangent):
        attend = functools.partial(attn.attend, mask=mask, implementation=implementation)
        out, pullback = jax.vjp(attend, q, k, v)
        return out, pullback(cotangent)

    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--devices", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    B, T, N, H = args.batch, args.length, args.heads, args.head_dim
    rng = np.random.default_rng(0)
    q, k, v, cotangent = (rng.normal(size=(B, T, N, H)).astype(np.float32) for _ in range(4))
    devices = f"{jax.device_count()} CPU devices"
    print(f"B={B} T=S={T} N={N} H={H} float32, {devices}, jax {jax.__version__}")
    print("\n| mask | case | skipped blocks | fwd+bwd ms | / chunked | temp MiB (per device) |")
    print("|---|---|---|---|---|---|")
    for mask_name, mask in (("none", None), ("causal", masks.causal())):
        cases, memory, skipped = {}, {}, {}
        for name in ("dense", "chunked"):
            fn, memory[name] = timing.compile_with_memory(
                _forward_backward(name, mask), q, k, v, cotangent
            )
            cases[name] = (fn, (q, k, v, cotangent))
        for n in args.devices:
            name = f"ring x{n}"
            mesh = jax.make_mesh((n,), (ring.CONTEXT_AXIS,), devices=jax.devices()[:n])
            with jax.set_mesh(mesh):
                fn, memory[name] = timing.compile_with_memory(
                    _forward_backward("ring", mask), q, k, v, cotangent
                )
            kinds = ring.block_kinds(mask, (B, N, T, T), n)
            skipped[name] = f"{int((kinds == ring.EMPTY).sum())} of {n * n}"
            cases[name] = (functools.partial(_in_mesh, fn, mesh), (q, k, v, cotangent))
        medians = timing.interleaved_medians(cases, repeats=args.repeats)
        for name, seconds in medians.items():
            ratio = seconds / medians["chunked"]
            print(
                f"| {mask_name} | {name} | {skipped.get(name, '-')} | {seconds * 1e3:.0f} | "
                f"{ratio:.2f} | {memory[name] / MIB:.1f} |"
            )


def _in_mesh(fn: Any, mesh: Any, *args: Any) -> Any:
    with jax.set_mesh(mesh):
        return fn(*args)


if __name__ == "__main__":
    main()
