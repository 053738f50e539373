"""The training loop end to end: smoke runs, resume after SIGKILL, data parallelism, gradient
accumulation, the NaN guard, config errors and the CLI."""

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from data.mock_images import mock_image_data
from data.mock_speech import mock_speech_data

from attn import cli
from attn.train import NonFiniteLossError, load_config, train_and_evaluate

from .helpers import (
    REVERSE,
    ROOT,
    SMOKE_RUN_ELSEWHERE,
    SUPERVISED_EXPERIMENTS,
    assert_smoke_workdir,
    fake_devices,
    kill_mid_run,
    params_of,
    run_command,
    smoke,
)

# Every test here trains (in process or in `attn run` subprocesses).
pytestmark = pytest.mark.slow

CATALOG_DATASETS = {"tiny_shakespeare", "imdb_reviews"}
CATALOG_IMAGES = {"mnist", "cifar10", "coco_captions"}
CATALOG_SPEECH = {"spoken_digit", "speech_commands", "librispeech"}


def _mock_catalog(name: str):
    """Catalog datasets cannot be downloaded here: their real loaders read mock records."""
    if name in CATALOG_IMAGES:
        return mock_image_data()
    if name in CATALOG_SPEECH:
        return mock_speech_data()
    if name in CATALOG_DATASETS:
        return tfds.testing.mock_data(num_examples=4)
    return contextlib.nullcontext()


@pytest.mark.parametrize(
    "path",
    [path for path in SUPERVISED_EXPERIMENTS if path.stem not in SMOKE_RUN_ELSEWHERE],
    ids=lambda p: p.stem,
)
def test_every_experiment_smoke_variant_trains_and_evaluates(path, tmp_path):
    config = load_config(f"{path}:smoke")
    with _mock_catalog(config.data.name):
        train_and_evaluate(config, tmp_path)
    assert_smoke_workdir(tmp_path)


def test_the_smoke_runs_left_out_here_run_elsewhere():
    for stem, test_file in SMOKE_RUN_ELSEWHERE.items():
        assert (ROOT / "experiments" / f"{stem}.py").is_file()
        assert f"{stem}.py" in (ROOT / test_file).read_text()
        assert "assert_smoke_workdir" in (ROOT / test_file).read_text()


@pytest.mark.parametrize("variant", ["performer(num_features=16)", "linformer(max_length=64)"])
def test_attention_variant_from_an_override_trains_evaluates_and_plots(variant, tmp_path, capsys):
    """Through the whole loop (training, evaluation, plots). The variants
    have no weight matrix, so no attention maps are drawn; the curves are."""
    path = str(ROOT / "experiments" / "listops.py")
    final = train_and_evaluate(smoke(path, **{"model.attention.variant": variant}), tmp_path)
    assert np.isfinite(final["eval"]["loss"])
    assert json.loads((tmp_path / "config.json").read_text())["model"]["attention"]["variant"]
    assert not list((tmp_path / "plots").glob("attention_*.png"))
    assert (tmp_path / "plots" / "curves.png").stat().st_size > 1000
    assert cli.main(["plot", "--workdir", str(tmp_path)]) == 2
    assert "recorded no attention weights" in capsys.readouterr().err


def test_killed_run_resumes_to_identical_parameters(tmp_path):
    """SIGKILL a real training process mid-run, resume it, and compare with an uninterrupted run."""
    overrides = ["--config.train.num_steps=60", "--config.train.checkpoint_every=3"]
    environment = {**os.environ, "JAX_PLATFORMS": "cpu"}
    uninterrupted = tmp_path / "uninterrupted"
    subprocess.run(
        run_command(uninterrupted, *overrides), check=True, env=environment, capture_output=True
    )

    killed = tmp_path / "killed"
    # Killed once a few checkpoints exist, i.e. in the middle of training.
    steps_at_kill = kill_mid_run(run_command(killed, *overrides), killed, after_step=9)
    assert steps_at_kill and max(steps_at_kill) < 60

    subprocess.run(
        run_command(killed, *overrides), check=True, env=environment, capture_output=True
    )
    want, got = params_of(uninterrupted), params_of(killed)
    assert want.keys() == got.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    # The resumed log reads as one run: every train step logged once.
    steps = [
        r["step"]
        for r in map(json.loads, (killed / "metrics.jsonl").read_text().splitlines())
        if r["split"] == "train"
    ]
    assert steps == sorted(set(steps))


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    one = train_and_evaluate(smoke(**{"train.num_steps": 3}), tmp_path / "one")
    two = train_and_evaluate(
        smoke(**{"train.num_steps": 3, "train.accumulation_steps": 2}), tmp_path / "two"
    )
    want, got = params_of(tmp_path / "one"), params_of(tmp_path / "two")
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=2e-4, atol=2e-5, err_msg=name)
    assert abs(one["train"]["loss"] - two["train"]["loss"]) < 1e-4


def test_data_parallel_over_fake_devices_matches_one_device(tmp_path):
    """Four fake CPU devices (a fresh process: the device count is fixed when JAX starts)."""
    overrides = ["--config.train.num_steps=4", "--config.data.batch_size=8"]
    environment = {**os.environ, "JAX_PLATFORMS": "cpu"}
    subprocess.run(
        run_command(tmp_path / "one", *overrides), check=True, env=environment, capture_output=True
    )
    environment["XLA_FLAGS"] = fake_devices(4)
    on_four_devices = (
        "import sys, jax; from attn import cli; "
        "assert jax.local_device_count() == 4, jax.local_device_count(); "
        "sys.exit(cli.main(sys.argv[1:]))"
    )
    four = run_command(tmp_path / "four", *overrides)[3:]  # the arguments after "-m attn"
    result = subprocess.run(
        [sys.executable, "-c", on_four_devices, *four],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    want = params_of(tmp_path / "one")
    got = params_of(tmp_path / "four")
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    config = smoke(
        **{
            "optim.learning_rate": 1e12,
            "optim.grad_clip_norm": 0.0,
            "train.num_steps": 30,
            "train.checkpoint_every": 1,
        }
    )
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        train_and_evaluate(config, tmp_path)
    params = params_of(tmp_path)
    assert all(np.isfinite(value).all() for value in params.values())


def test_bfloat16_compute_keeps_float32_parameters(tmp_path):
    final = train_and_evaluate(smoke(**{"model.dtype": "bfloat16", "train.num_steps": 3}), tmp_path)
    assert np.isfinite(final["eval"]["loss"])
    assert {value.dtype for value in params_of(tmp_path).values()} == {np.dtype(np.float32)}


def test_cli_help_and_errors(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "attn run" in capsys.readouterr().out
    for command in ("run", "eval", "plot"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        assert "--workdir" in capsys.readouterr().out
    assert (
        cli.main(
            ["run", f"{REVERSE}:smoke", "--workdir", "unused", "--config.optim.lerning_rate=1"]
        )
        == 2
    )
    assert "did you mean 'optim.learning_rate'" in capsys.readouterr().err


def test_cli_eval_and_plot_read_a_trained_workdir(tmp_path, capsys):
    workdir = tmp_path / "run"
    dates = str(ROOT / "experiments" / "dates.py")
    assert cli.main(["run", f"{dates}:smoke", "--workdir", str(workdir)]) == 0
    assert "done:" in capsys.readouterr().out
    assert cli.main(["eval", "--workdir", str(workdir)]) == 0
    assert "sequence_accuracy" in capsys.readouterr().out
    assert cli.main(["plot", "--workdir", str(workdir), "--examples", "1"]) == 0
    paths = [Path(line) for line in capsys.readouterr().out.split()]
    assert paths and all(path.is_file() and path.suffix == ".png" for path in paths)
    text = ["3rd of March 2021", "03/03/21"]
    assert cli.main(["plot", "--workdir", str(workdir), "--text", text[0], "--text", text[1]]) == 0
    paths = [Path(line) for line in capsys.readouterr().out.split()]
    assert len(paths) == 2 and all("_text" in path.name and path.is_file() for path in paths)
