"""Restoring from damaged checkpoints: the newest readable one is used, with a warning naming
the damaged one; none readable, or none at all, is a one-line error naming the directory."""

import json
import logging
import shutil
from pathlib import Path

import pytest

from attn import cli
from attn.data.task import Task
from attn.train import train_and_evaluate

from .helpers import assert_same_params, checkpoint_steps, params_of, smoke

# Every test reads a workdir trained by a fixture.
pytestmark = pytest.mark.slow

OVERRIDES = {"train.checkpoint_every": 2}  # latest/ holds steps 2, 4 and 6


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def damage(workdir: Path, step: int, pattern: str) -> list[Path]:
    """Cut in half every file of checkpoint ``step`` whose path matches ``pattern``."""
    step_dir = workdir / "checkpoints" / "latest" / str(step)
    files = [path for path in step_dir.glob(pattern) if path.is_file()]
    assert files, f"{pattern} matches nothing in {step_dir}"
    for path in files:
        truncate(path)
    return files


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("trained") / "run"
    train_and_evaluate(smoke(**OVERRIDES), workdir)
    assert checkpoint_steps(workdir / "checkpoints" / "latest") == [2, 4, 6]
    return workdir


@pytest.fixture
def workdir(trained, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(trained, target)
    return target


def evaluate_latest(workdir: Path, capsys) -> tuple[int, str, str]:
    code = cli.main(["eval", "--workdir", str(workdir), "--checkpoint", "latest"])
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_falls_back_past_truncated_array_data_and_metadata(workdir, capsys, caplog):
    damage(workdir, 6, "default/d/*")  # the array data (tensorstore: 80-line traceback before)
    damage(workdir, 4, "default/_METADATA")  # the tree metadata (a bare JSON error before)
    with caplog.at_level(logging.WARNING, logger="attn.train.checkpoints"):
        code, out, _ = evaluate_latest(workdir, capsys)
    assert code == 0
    assert "latest checkpoint (step 2)" in out
    warnings = [r.getMessage() for r in caplog.records if r.name == "attn.train.checkpoints"]
    assert len(warnings) == 2
    latest = workdir.absolute() / "checkpoints" / "latest"
    assert f"{latest / '6'} is unreadable" in warnings[0]
    assert f"{latest / '4'} is unreadable" in warnings[1]
    # eval only reads: nothing moved.
    assert checkpoint_steps(latest) == [2, 4, 6]


def test_a_run_resumes_from_the_newest_readable_checkpoint(trained, workdir, caplog):
    """The damaged step is moved aside and trained again: the same parameters as before."""
    damage(workdir, 6, "default/ocdbt.process_0/d/*")
    with caplog.at_level(logging.WARNING, logger="attn.train.checkpoints"):
        train_and_evaluate(smoke(**OVERRIDES), workdir)
    latest = workdir / "checkpoints" / "latest"
    assert any("is unreadable" in record.getMessage() for record in caplog.records)
    assert [path.name.split("-")[0] for path in latest.glob("6.unreadable-*")] == ["6.unreadable"]
    assert checkpoint_steps(latest) == [2, 4, 6]
    assert_same_params(params_of(workdir), params_of(trained))


def test_no_readable_checkpoint_is_a_one_line_error(workdir, capsys):
    for step in (2, 4, 6):
        damage(workdir, step, "default/_METADATA")
    code, _, err = evaluate_latest(workdir, capsys)
    assert code == 2
    [line] = [line for line in err.splitlines() if line.startswith("attn eval")]
    directory = workdir.absolute() / "checkpoints" / "latest"
    assert line.startswith(f"attn eval: error: no readable checkpoint in {directory} (step 6: ")


def test_a_run_moves_nothing_when_no_checkpoint_is_readable(workdir):
    for step in (2, 4, 6):
        damage(workdir, step, "default/_METADATA")
    with pytest.raises(ValueError, match="no readable checkpoint in"):
        train_and_evaluate(smoke(**OVERRIDES), workdir)
    assert checkpoint_steps(workdir / "checkpoints" / "latest") == [2, 4, 6]
    assert not list((workdir / "checkpoints" / "latest").glob("*.unreadable-*"))


def test_eval_of_a_workdir_without_checkpoints_fails(workdir, capsys):
    """It used to score the random initial weights as 'step 0' and exit 0."""
    shutil.rmtree(workdir / "checkpoints")
    code, out, err = evaluate_latest(workdir, capsys)
    assert code == 2 and "step 0" not in out
    assert f"no latest checkpoint in {workdir / 'checkpoints' / 'latest'}" in err
    assert not (workdir / "checkpoints").exists()  # reading creates nothing


@pytest.mark.parametrize("examples", ["0", "-3"])
def test_plot_needs_a_positive_example_count(workdir, capsys, examples):
    assert cli.main(["plot", "--workdir", str(workdir), "--examples", examples]) == 2
    assert (
        capsys.readouterr().err
        == f"attn plot: error: --examples must be at least 1, got {examples}\n"
    )


def test_plot_passes_the_example_count_without_changing_the_config(workdir, capsys):
    experiment, _ = cli._load_workdir(str(workdir), "latest")
    args = cli._parser().parse_args(["plot", "--workdir", str(workdir), "--examples", "3"])
    paths = cli._plot(experiment, args)
    experiment.close()
    assert {path.name.split("_example")[1] for path in paths} == {
        "0_cli.png",
        "1_cli.png",
        "2_cli.png",
    }
    assert experiment.config.train.plot_examples == 1


def test_eval_scores_the_whole_split_when_asked(workdir, capsys, monkeypatch):
    """By default `attn eval` reads the batches the run's own evaluations read
    (train.eval_batches); --whole-split reads them all."""
    config = json.loads((workdir / "config.json").read_text())
    config["train"]["eval_batches"] = 1
    (workdir / "config.json").write_text(json.dumps(config))
    asked = []
    original = Task.eval_batches

    def recording(self, split="test", max_batches=None):
        asked.append(max_batches)
        return original(self, split, max_batches)

    monkeypatch.setattr(Task, "eval_batches", recording)
    assert cli.main(["eval", "--workdir", str(workdir)]) == 0
    assert cli.main(["eval", "--workdir", str(workdir), "--whole-split"]) == 0
    assert asked == [1, None]
    first, whole = capsys.readouterr().out.splitlines()
    assert first != whole  # one batch of the test split scores differently from all of them
