"""benchmarks/loop.py end to end on a smoke config (the script, not its timings)."""

import pytest

from .helpers import run_benchmark

# Runs the loop benchmark end to end.
pytestmark = pytest.mark.slow


def test_the_loop_benchmark_prints_a_row_per_experiment():
    result = run_benchmark(
        "loop", "--experiments", "reverse:smoke", "--steps", "4", "--repeats", "1"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    header = "| experiment | steps | step alone (ms) | loop (ms/step) | loop / step alone |"
    assert header in result.stdout
    [row] = [line for line in result.stdout.splitlines() if line.startswith("| reverse:smoke |")]
    steps, alone, loop, ratio = (float(cell) for cell in row.strip("| ").split(" | ")[1:])
    assert steps == 4 and alone > 0 and loop > 0 and ratio > 0
