"""The benchmark suite through `attn bench`: tables, JSON, plot, errors and skipped cases."""

import json

import pytest

from attn import cli
from benchmarks import implementations

# Runs `attn bench` end to end.
pytestmark = pytest.mark.slow


def _bench(tmp_path, *extra: str) -> dict:
    out = tmp_path / "bench"
    argv = ["bench", "--lengths", "128", "--repeats", "1", "--matmul-sizes", "64"]
    assert cli.main([*argv, *extra, "--out", str(out)]) == 0
    assert out.with_suffix(".png").stat().st_size > 0
    assert "| T | causal | implementation |" in out.with_suffix(".md").read_text()
    return json.loads(out.with_suffix(".json").read_text())


def test_bench_times_every_case_and_checks_it_against_dense(tmp_path):
    names = ["dense", "chunked", "jax.nn", "linear"]
    report = _bench(tmp_path, "--implementations", *names)
    rows = report["results"]
    assert {(r["implementation"], r["causal"]) for r in rows} == {
        (n, c) for n in names for c in (False, True)
    }
    for row in rows:
        assert row["seconds_forward"] > 0 and row["seconds_forward_backward"] > 0
        assert row["flops_forward"] > 0 and row["temp_forward"] > 0
        if row["implementation"] == "linear":
            # A different model, not an approximation: its distance from softmax is large.
            assert row["error"] > 1e-2
        else:
            assert row["error"] < 1e-5, row
    assert report["environment"]["backend"] == "cpu"


def test_bench_in_bfloat16_with_attends_implementations_and_a_baseline(tmp_path):
    names = ["dense", "pallas", "cudnn", "auto"]
    extra = ["--dtype", "bfloat16", "--causal", "yes", "--baseline", "dense"]
    report = _bench(tmp_path, *extra, "--implementations", *names)
    rows = {row["implementation"]: row for row in report["results"]}
    assert report["arguments"]["dtype"] == "bfloat16"
    # cuDNN needs a GPU: its row says why, and the run goes on.
    assert rows["cudnn"]["skipped"].startswith("failed: ValueError:")
    assert "cuDNN needs a GPU" in rows["cudnn"]["skipped"]
    for name in ("dense", "pallas", "auto"):
        assert rows[name]["dtype"] == "bfloat16" and rows[name]["seconds_forward_backward"] > 0
        # Against float32 attention of the same rounded inputs: the output's rounding.
        assert 0 < rows[name]["error"] < 2e-2, rows[name]
    table = (tmp_path / "bench.md").read_text()
    assert "Time per call in ms (x dense's time" in table
    [forward] = [line for line in table.splitlines() if line.startswith("| 128 | yes | fwd |")]
    assert forward.split(" | ")[3].endswith("(1.00)") and forward.split(" | ")[5] == "—"


def test_bench_reports_a_missing_library_instead_of_failing(tmp_path, monkeypatch):
    def missing(causal):
        raise ModuleNotFoundError("No module named 'tokamax'", name="tokamax")

    monkeypatch.setitem(implementations.IMPLEMENTATIONS, "tokamax", missing)
    rows = _bench(tmp_path, "--implementations", "dense", "tokamax", "--causal", "no")["results"]
    skipped = [r for r in rows if r["implementation"] == "tokamax"]
    assert len(skipped) == 1 and "not installed: tokamax" in skipped[0]["skipped"]


def test_bench_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "--causal", "maybe"])
    assert "invalid choice: 'maybe'" in capsys.readouterr().err
