"""Attention benchmark: time, FLOP rate, temporary memory and error over sequence lengths.

    python -m benchmarks.attention --lengths 256 1024 4096 --out benchmarks/results/cpu
    attn bench --dtype bfloat16 --implementations pallas cudnn jax.nn --baseline cudnn

For each length, each implementation (and causal variant) is compiled for the forward pass and
for forward+backward (a VJP with a random cotangent); cases run interleaved, after warm-up, and
their medians are reported (each timed call ends with ``block_until_ready``). Inputs are
``--dtype`` (float32 or bfloat16). FLOPs follow the FlashAttention convention: forward
``4 B N T S H`` (half with a causal mask), forward+backward 3.5 times that. Temporary memory is
XLA's compiled memory analysis. The roofline is the same machine's matmul rate in the same
dtype, timed in the same interleaved rounds as the cases. Every case reports its largest error
against dense attention in float32 at full matmul precision, on the same (rounded) inputs and a
sample of query rows (exact at any length). A case that fails to compile or run (an
implementation the backend lacks, memory) becomes a row that says why; the others go on.
``--baseline NAME`` adds a table of times relative to NAME. Writes a Markdown table, a JSON file
(both rewritten after each length, so a stopped run keeps what it measured) and a PNG plot.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import attn
from benchmarks import implementations, timing

__all__ = ["main", "run"]

GIB = 2.0**30


def _inputs(
    batch: int, length: int, heads: int, head_dim: int, dtype: jnp.dtype
) -> tuple[jax.Array, ...]:
    """q, k, v and an output cotangent, ``[batch, length, heads, head_dim]`` in ``dtype``."""
    keys = jax.random.split(jax.random.key(0), 4)
    shape = (batch, length, heads, head_dim)
    # Drawn in float32 and rounded, so every dtype sees the same values up to rounding.
    return tuple(jax.random.normal(key, shape, jnp.float32).astype(dtype) for key in keys)


def _reference_rows(q, k, v, causal: bool, rows: np.ndarray) -> jax.Array:
    """Dense attention in float32 for a subset of query rows: exact (full-precision matmuls:
    a GPU would otherwise use TF32), with O(rows * S) memory."""
    S = k.shape[1]
    mask = (np.arange(S)[None, :] <= rows[:, None]) if causal else None
    q, k, v = (x.astype(jnp.float32) for x in (q[:, rows], k, v))
    return attn.attend(q, k, v, mask=mask, implementation="dense", precision="highest")


def _failure(error: Exception) -> str:
    """A failed case's reason on one table-safe line."""
    lines = str(error).strip().splitlines() or [""]
    return f"failed: {type(error).__name__}: {lines[0][:200]}".replace("|", "/")


def _flops(batch: int, heads: int, length: int, head_dim: int, causal: bool) -> float:
    forward = 4.0 * batch * heads * length * length * head_dim
    return forward / 2 if causal else forward


def _measure_length(args: argparse.Namespace, length: int) -> list[dict[str, Any]]:
    dtype = jnp.dtype(args.dtype)
    q, k, v, cotangent = _inputs(args.batch, length, args.heads, args.head_dim, dtype)
    rows = np.unique(np.linspace(0, length - 1, args.error_rows).astype(int))
    timed: dict[str, tuple[Any, tuple[Any, ...]]] = {}
    results = []
    for causal in args.causal:
        reference = _reference_rows(q, k, v, causal, rows)
        for name in args.implementations:
            row = {"length": length, "causal": causal, "implementation": name, "dtype": dtype.name}
            try:
                fn = implementations.make(name, causal)
            except ImportError as error:
                # A peer library that is not installed (tokamax comes with the bench extra).
                row["skipped"] = f"not installed: {error.name} (pip install -e '.[bench]')"
                results.append(row)
                continue

            def forward_backward(q, k, v, cotangent, fn=fn):
                _, pullback = jax.vjp(fn, q, k, v)
                return pullback(cotangent)

            try:
                started = time.perf_counter()
                forward, row["temp_forward"] = timing.compile_with_memory(fn, q, k, v)
                both, row["temp_forward_backward"] = timing.compile_with_memory(
                    forward_backward, q, k, v, cotangent
                )
                # Both programs; for planning runs on borrowed machines (JSON only).
                row["compile_seconds"] = time.perf_counter() - started
                largest = max(row["temp_forward"], row["temp_forward_backward"])
                if largest > args.max_temp_gib * GIB:
                    row["skipped"] = f"needs {largest / GIB:.1f} GiB temporary memory"
                    results.append(row)
                    continue
                out = forward(q, k, v)
                error = jnp.max(jnp.abs(out[:, rows].astype(jnp.float32) - reference))
                row["error"] = float(error)
                if not args.forward_only:
                    # Run once here, so that a failing backward pass fails this case alone.
                    jax.block_until_ready(both(q, k, v, cotangent))
            except Exception as error:  # whatever fails is this case's result, shown in its row
                row["skipped"] = _failure(error)
                results.append(row)
                continue
            key = f"{name}|{causal}"
            timed[key + "|forward"] = (forward, (q, k, v))
            if not args.forward_only:
                timed[key + "|forward_backward"] = (both, (q, k, v, cotangent))
            results.append(row)
    # The roofline runs in the same rounds as the cases, so it sees the same machine load.
    for size in args.matmul_sizes:
        timed[f"matmul|{size}"] = timing.matmul_case(size, dtype)
    medians = timing.interleaved_medians(timed, repeats=args.repeats, warmup=args.warmup)
    matmul = {size: 2.0 * size**3 / medians[f"matmul|{size}"] for size in args.matmul_sizes}
    for row in results:
        row["matmul_flops"] = matmul
        key = f"{row['implementation']}|{row['causal']}"
        flops = _flops(args.batch, args.heads, length, args.head_dim, row["causal"])
        for phase, factor in (("forward", 1.0), ("forward_backward", 3.5)):
            seconds = medians.get(f"{key}|{phase}")
            if seconds is not None:
                row[f"seconds_{phase}"] = seconds
                row[f"flops_{phase}"] = factor * flops / seconds
    return results


def _environment() -> dict[str, Any]:
    return {
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "python": platform.python_version(),
        # Peak resident memory of this process (Linux reports KiB): the whole run fits in it.
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def _fmt(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "—" if value is None else f"{value / scale:.{digits}f}"


def markdown(results: list[dict[str, Any]]) -> str:
    """The results as a Markdown table. ``% matmul`` compares with the fastest matmul in the
    inputs' dtype measured in the same rounds (column ``matmul``)."""
    lines = [
        "| T | causal | implementation | fwd ms | fwd GFLOP/s | fwd % matmul | fwd+bwd ms "
        "| fwd+bwd GFLOP/s | temp MiB fwd | temp MiB fwd+bwd | max error | matmul GFLOP/s |",
        "|---:|:---:|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results:
        rate = row.get("flops_forward")
        roof = max(row["matmul_flops"].values())
        lines.append(
            "| {length} | {causal} | {implementation} | {fwd_ms} | {fwd_rate} | {pct} | {both_ms} "
            "| {both_rate} | {temp_f} | {temp_b} | {error} | {roof} |".format(
                length=row["length"],
                causal="yes" if row["causal"] else "no",
                implementation=row["implementation"],
                fwd_ms=_fmt(row.get("seconds_forward"), 1e-3),
                fwd_rate=_fmt(rate, 1e9),
                pct=_fmt(None if rate is None else 100 * rate / roof, 1, 0),
                both_ms=_fmt(row.get("seconds_forward_backward"), 1e-3),
                both_rate=_fmt(row.get("flops_forward_backward"), 1e9),
                temp_f=_fmt(row.get("temp_forward"), 2**20),
                temp_b=_fmt(row.get("temp_forward_backward"), 2**20),
                error=row.get("skipped") or f"{row['error']:.1e}",
                roof=_fmt(roof, 1e9, 0),
            )
        )
    return "\n".join(lines) + "\n"


def _find(results: list[dict[str, Any]], length: int, name: str, causal: bool) -> dict | None:
    for row in results:
        if (row["length"], row["implementation"], row["causal"]) == (length, name, causal):
            return row
    return None


def _ratio(a: dict | None, b: dict | None, key: str) -> float | None:
    """``b[key] / a[key]``: how many times faster ``a`` is (for seconds) or smaller."""
    if a is None or b is None or a.get(key) is None or b.get(key) is None:
        return None
    return b[key] / a[key]


def targets(results: list[dict[str, Any]]) -> str:
    """Issue 4's targets as measured ratios (Markdown list); lengths not measured are skipped."""
    lines = []
    lengths = sorted({row["length"] for row in results})
    for length in (t for t in lengths if t <= 1024):
        dense, jax_nn = (
            _find(results, length, "dense", False),
            _find(results, length, "jax.nn", False),
        )
        for phase in ("forward", "forward_backward"):
            ratio = _ratio(jax_nn, dense, f"seconds_{phase}")
            if ratio is not None:
                lines.append(
                    f"- T={length} dense / jax.nn {phase} time: {ratio:.2f} (target <= 1.05)"
                )
    if 4096 in lengths:
        chunked = _find(results, 4096, "chunked", False)
        for other, key, goal in (
            ("dense", "seconds_forward", ">= 3"),
            ("tokamax", "seconds_forward", ">= 1.2"),
            ("dense", "seconds_forward_backward", ">= 1.3"),
            ("dense", "temp_forward", ">= 30 (memory)"),
        ):
            ratio = _ratio(chunked, _find(results, 4096, other, False), key)
            if ratio is not None:
                lines.append(f"- T=4096 {other} / chunked {key}: {ratio:.2f} (target {goal})")
        if chunked is not None and chunked.get("flops_forward") is not None:
            for size, rate in chunked["matmul_flops"].items():
                share = chunked["flops_forward"] / rate
                lines.append(
                    f"- T=4096 chunked forward = {100 * share:.0f}% of the n={size} "
                    f"{chunked['dtype']} matmul rate (target >= 60%)"
                )
    if 8192 in lengths:
        ratio = _ratio(
            _find(results, 8192, "chunked", True),
            _find(results, 8192, "chunked", False),
            "seconds_forward",
        )
        if ratio is not None:
            lines.append(
                f"- T=8192 chunked full / causal forward time: {ratio:.2f} (target >= 1.8)"
            )
    return "\n".join(lines) + "\n"


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """GFLOP/s against T, forward and forward+backward, with the matmul roofline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = sorted(results, key=lambda row: row["length"])
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    names = sorted({row["implementation"] for row in results})
    for ax, (key, title) in zip(
        axes,
        [
            ("flops_forward", "forward GFLOP/s"),
            ("flops_forward_backward", "forward+backward GFLOP/s"),
            ("temp_forward_backward", "temporary MiB, forward+backward"),
        ],
        strict=True,
    ):
        for name in names:
            for causal, style in ((False, "-"), (True, "--")):
                points = [
                    (row["length"], row[key])
                    for row in results
                    if row["implementation"] == name and row["causal"] == causal and key in row
                ]
                if points:
                    x, y = zip(*points, strict=True)
                    scale = 2**20 if key.startswith("temp") else 1e9
                    label = f"{name}{' causal' if causal else ''}"
                    # One colour per implementation; causal runs are its dashed line.
                    color = f"C{names.index(name) % 10}"
                    ax.plot(x, np.asarray(y) / scale, style, marker="o", color=color, label=label)
        if key.startswith("flops"):
            roofline = sorted(
                {(row["length"], max(row["matmul_flops"].values())) for row in results}
            )
            x, y = zip(*roofline, strict=True)
            label = f"{results[0]['dtype']} matmul"
            ax.plot(x, np.asarray(y) / 1e9, ":", color="gray", label=label)
        # Log scales: linear attention's effective rate and dense memory span decades.
        ax.set_yscale("log")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length T")
        ax.set_title(title)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def compare(results: list[dict[str, Any]], baseline: str) -> str:
    """Milliseconds per call of every implementation, one row per (T, causal, pass), each with
    its time as a multiple of ``baseline``'s (Markdown; ``—`` where a case did not run)."""
    names = list(dict.fromkeys(row["implementation"] for row in results))
    lines = [
        f"Time per call in ms (x {baseline}'s time; below 1 is faster than {baseline}):",
        "",
        "| T | causal | pass | " + " | ".join(names) + " |",
        "|---:|:---:|:---|" + "---:|" * len(names),
    ]
    for length, causal in dict.fromkeys((row["length"], row["causal"]) for row in results):
        for phase, label in (("forward", "fwd"), ("forward_backward", "fwd+bwd")):
            key = f"seconds_{phase}"
            base = _find(results, length, baseline, causal)
            cells = []
            for name in names:
                row = _find(results, length, name, causal)
                seconds = None if row is None else row.get(key)
                ratio = _ratio(base, row, key)
                cells.append(
                    "—"
                    if seconds is None
                    else f"{seconds * 1e3:.2f}" + ("" if ratio is None else f" ({ratio:.2f})")
                )
            if any(cell != "—" for cell in cells):
                causal_cell = "yes" if causal else "no"
                lines.append(f"| {length} | {causal_cell} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report(args: argparse.Namespace, results: list[dict[str, Any]]) -> str:
    """The Markdown report: the table, the baseline comparison if asked, issue 4's targets;
    rows by length (lengths may run in any order)."""
    results = sorted(results, key=lambda row: row["length"])
    text = f"{args.dtype} inputs, B={args.batch}, N={args.heads}, H={args.head_dim}\n\n"
    text += markdown(results)
    if args.baseline is not None:
        text += "\n" + compare(results, args.baseline)
    return text + "\n" + targets(results)


def _write(args: argparse.Namespace, results: list[dict[str, Any]], *, final: bool) -> None:
    """OUT.md and OUT.json (after every length), OUT.png (at the end)."""
    environment = _environment()
    text = report(args, results)
    text += f"\npeak resident memory of the run: {environment['peak_rss_gib']:.1f} GiB\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    settings = {key: value for key, value in vars(args).items() if key != "out"}
    args.out.with_suffix(".json").write_text(
        json.dumps(
            {"environment": environment, "arguments": settings, "results": results}, indent=1
        )
    )
    if final:
        plot(results, args.out.with_suffix(".png"))


def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Measure every length, printing each length's table as it completes (and, with
    ``args.out``, rewriting the Markdown and JSON files)."""
    results = []
    for length in args.lengths:
        rows = _measure_length(args, length)
        print(markdown(rows), flush=True)
        results += rows
        if args.out is not None:
            _write(args, results, final=False)
    return results, _environment()


def parse(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument(
        "--implementations",
        nargs="+",
        default=["dense", "chunked", "jax.nn", "flax.nnx", "tokamax", "linear", "performer"],
        choices=sorted(implementations.IMPLEMENTATIONS),
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="dtype of q, k, v (and of the matmul roofline); errors are against float32",
    )
    parser.add_argument(
        "--baseline",
        choices=sorted(implementations.IMPLEMENTATIONS),
        help="also tabulate every time as a multiple of this implementation's",
    )
    parser.add_argument(
        "--causal",
        choices=("no", "yes"),
        nargs="+",
        default=["no", "yes"],
        help="'no' (full), 'yes' (causal) or both",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--forward-only", action="store_true")
    parser.add_argument("--error-rows", type=int, default=64)
    parser.add_argument(
        "--max-temp-gib",
        type=float,
        default=8.0,
        help="skip a case whose compiled temporary memory exceeds this",
    )
    parser.add_argument("--matmul-sizes", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--out", type=Path, default=None, help="write OUT.md, OUT.json, OUT.png")
    args = parser.parse_args(argv)
    args.causal = [choice == "yes" for choice in args.causal]
    return args


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """Run the benchmark from the command line (also ``attn bench``)."""
    args = parse(argv, prog)
    results, environment = run(args)
    print(report(args, results))
    print(f"peak resident memory of the run: {environment['peak_rss_gib']:.1f} GiB")
    if args.out is not None:
        _write(args, results, final=True)


if __name__ == "__main__":
    main()
