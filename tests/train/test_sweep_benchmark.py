"""benchmarks/sweep.py end to end on a smoke config (the script, not its timings)."""

import json

import pytest

from benchmarks import sweep

from .helpers import run_benchmark

# Runs the sweep benchmark end to end: a few short runs, each compiling its own train step.
pytestmark = pytest.mark.slow


def test_the_sweep_benchmark_prints_a_row_per_k(tmp_path):
    """K=2 with one of the two sequential runs timed (and extrapolated, as the table says)."""
    out = tmp_path / "sweep.json"
    result = run_benchmark(
        "sweep",
        *("--experiments", "reverse:smoke", "--ks", "2", "--steps", "3"),
        *("--sequential-sample", "1", "--out", str(out)),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    header = (
        "| experiment | K | steps | sequential timed | sequential (trials/h) | vmapped (trials/h) "
        "| vmapped / sequential | steady sequential (trial-steps/s) "
        "| steady vmapped (trial-steps/s) | steady vmapped / sequential |"
    )
    lines = result.stdout.splitlines()
    assert lines[lines.index(header) + 1] == "|---" * 10 + "|"
    rows = [line for line in lines if line.startswith("| reverse:smoke |")]
    assert [row.split(" | ")[1:4] for row in rows] == [["2", "3", "1 of 2 (x2.0)"]]
    for row in rows:
        assert all(float(cell) > 0 for cell in row.strip("| ").split(" | ")[4:])
    results = json.loads(out.read_text())["results"]
    assert [(r["experiment"], r["k"], len(r["learning_rates"])) for r in results] == [
        ("reverse:smoke", 2, 2)
    ]
    assert results[0]["sequential_timed"] == 1
    [measured] = results[0]["rounds"]
    assert measured["vmapped"]["trials"] == 2 and measured["vmapped"]["steady_steps"] == 2 * 2
    # One trial ran alone; its totals stand for both.
    assert measured["sequential"]["trials"] == 2 and measured["sequential"]["steady_steps"] == 2 * 2


def test_a_sequential_sample_spreads_over_the_trials():
    trials = list(range(64))
    assert sweep.sample(trials, 4) == [0, 21, 42, 63]
    assert sweep.sample(trials, 1) == [0]
    assert sweep.sample(trials, None) == sweep.sample(trials, 64) == trials
    assert sweep.timed_label(64, 64) == "all 64"
    assert sweep.timed_label(4, 64) == "4 of 64 (x16.0)"
