"""The vision experiments beyond their smoke runs (tests/train/test_loop.py): caption scores
in the run's evaluation, `attn plot` of a user's image, and exact resume with augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attn import cli
from attn.train import train_and_evaluate

from .helpers import ROOT, assert_same_params, assert_smoke_workdir, params_of, smoke

pytestmark = pytest.mark.slow  # trains

CAPTIONS = str(ROOT / "experiments" / "captions.py")
VIT_DIGITS = str(ROOT / "experiments" / "vit_digits.py")


def test_captions_eval_reports_caption_scores_and_plot_draws_a_users_image(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert cli.main(["run", f"{CAPTIONS}:smoke", "--workdir", str(workdir)]) == 0
    assert "bleu4" in capsys.readouterr().out  # the run's final evaluation
    assert_smoke_workdir(workdir)
    # A user's picture of another size and mode is resized to the task's 32x32 RGB.
    picture = tmp_path / "mine.png"
    pixels = np.zeros((40, 50, 4), np.uint8)
    pixels[5:20, 5:20] = (230, 30, 30, 255)
    Image.fromarray(pixels, "RGBA").save(picture)
    assert cli.main(["plot", "--workdir", str(workdir), "--image", str(picture)]) == 0
    (path,) = [Path(line) for line in capsys.readouterr().out.split()]
    assert path.name == "attention_words_example0_image.png" and path.stat().st_size > 1000
    assert cli.main(["plot", "--workdir", str(workdir), "--text", "a red circle"]) == 2
    assert "inputs are image: pass --image, not --text" in capsys.readouterr().err
    assert cli.main(["plot", "--workdir", str(workdir), "--image", str(tmp_path)]) == 2
    assert "cannot read image" in capsys.readouterr().err


def test_augmented_image_run_resumes_to_identical_parameters(tmp_path):
    """Random shifts are drawn from (seed, step): a run stopped half way and resumed ends
    with the parameters of one that never stopped."""
    config = smoke(VIT_DIGITS, **{"train.num_steps": 4})
    train_and_evaluate(config, tmp_path / "whole")
    assert_smoke_workdir(tmp_path / "whole")
    train_and_evaluate(smoke(VIT_DIGITS, **{"train.num_steps": 2}), tmp_path / "halves")
    train_and_evaluate(config, tmp_path / "halves")
    assert_same_params(params_of(tmp_path / "halves"), params_of(tmp_path / "whole"))
