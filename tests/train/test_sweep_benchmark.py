"""benchmarks/sweep.py end to end on a smoke config (the script, not its timings)."""

import json

import pytest

from .helpers import run_benchmark

# Runs the sweep benchmark end to end: a few short runs, each compiling its own train step.
pytestmark = pytest.mark.slow


def test_the_sweep_benchmark_prints_a_row_per_k(tmp_path):
    out = tmp_path / "sweep.json"
    result = run_benchmark(
        "sweep", "--experiments", "reverse:smoke", "--ks", "2", "--steps", "3", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr[-2000:]
    header = (
        "| experiment | K | steps | sequential (trials/h) | vmapped (trials/h) "
        "| vmapped / sequential | steady sequential (trial-steps/s) "
        "| steady vmapped (trial-steps/s) | steady vmapped / sequential |"
    )
    lines = result.stdout.splitlines()
    assert lines[lines.index(header) + 1] == "|---" * 9 + "|"
    rows = [line for line in lines if line.startswith("| reverse:smoke |")]
    assert [row.split(" | ")[1:3] for row in rows] == [["2", "3"]]
    for row in rows:
        assert all(float(cell) > 0 for cell in row.strip("| ").split(" | ")[3:])
    results = json.loads(out.read_text())["results"]
    assert [(r["experiment"], r["k"], len(r["learning_rates"])) for r in results] == [
        ("reverse:smoke", 2, 2)
    ]
    [vmapped_round] = [r["vmapped"] for r in results[0]["rounds"]]
    assert vmapped_round["trials"] == 2 and vmapped_round["steady_steps"] == 2 * 2
