"""Shared by the training tests: smoke configs, `attn run` commands, reading checkpoints."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from attn.train import load_config
from attn.train.config import apply_override

ROOT = Path(__file__).resolve().parents[2]
REVERSE = str(ROOT / "experiments" / "reverse.py")
# The supervised experiments; the RL ones (rl_*.py: an `env` section, trained by attn.rl) are
# tested in tests/rl.
SUPERVISED_EXPERIMENTS = sorted(
    path for path in (ROOT / "experiments").glob("*.py") if not path.stem.startswith("rl_")
)
# Experiments whose smoke run (to its end, workdir checked by assert_smoke_workdir) is part
# of a test of their own; tests/train/test_loop.py does not train them again.
SMOKE_RUN_ELSEWHERE = {
    "captions": "tests/train/test_vision_experiments.py",
    "vit_digits": "tests/train/test_vision_experiments.py",
    "speech_las": "tests/train/test_speech_experiments.py",
}
ENVIRONMENT = {**os.environ, "JAX_PLATFORMS": "cpu"}


def fake_devices(count: int) -> str:
    """XLA_FLAGS for a subprocess with ``count`` CPU devices, keeping the session's flags (the
    compile settings of tests/conftest.py, so its numbers match the in-process runs')."""
    flags = os.environ.get("XLA_FLAGS", "")
    return f"{flags} --xla_force_host_platform_device_count={count}".strip()


def assert_smoke_workdir(workdir: Path) -> None:
    """What every finished run leaves: metrics of both splits (finite losses, the train
    record's rate and gradient norm), config.json, attention pictures and curves, TensorBoard
    events, and the latest and best checkpoints."""
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in records} == {"train", "eval"}
    assert all(np.isfinite(r["loss"]) for r in records)
    final_eval = [r for r in records if r["split"] == "eval"][-1]
    assert 0.0 <= final_eval["accuracy"] <= 1.0
    train_record = next(r for r in records if r["split"] == "train")
    assert {"learning_rate", "steps_per_second", "grad_norm"} <= set(train_record)
    assert json.loads((workdir / "config.json").read_text())["data"]["name"]
    assert list((workdir / "plots").glob("attention_*.png"))
    assert (workdir / "plots" / "curves.png").stat().st_size > 1000
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert (workdir / "checkpoints" / "latest").is_dir()
    assert (workdir / "checkpoints" / "best").is_dir()


def smoke(path: str = REVERSE, **overrides):
    config = load_config(f"{path}:smoke")
    for key, value in overrides.items():
        apply_override(config, key, str(value))
    return config


def restore_latest(workdir: Path) -> dict:
    """The latest checkpoint, read with orbax onto this process's first device, whatever
    devices (or processes) wrote it."""
    manager = ocp.CheckpointManager(
        workdir.absolute() / "checkpoints" / "latest",
        item_handlers=ocp.StandardCheckpointHandler(),
    )
    step = manager.latest_step()
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
        manager.item_metadata(step),
    )
    restored = manager.restore(step, args=ocp.args.StandardRestore(target))
    manager.close()
    return restored


def params_of(workdir: Path) -> dict:
    """The latest checkpoint's parameters as a flat {path: array} dict."""
    leaves = jax.tree_util.tree_leaves_with_path(restore_latest(workdir)["params"])
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def assert_same_params(got: dict, want: dict) -> None:
    assert want.keys() == got.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def checkpoint_steps(directory: Path) -> list[int]:
    """Finished checkpoints only (orbax writes into '<step>.orbax-checkpoint-tmp' first)."""
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def run_command(workdir: Path, *overrides: str, experiment: str = f"{REVERSE}:smoke") -> list[str]:
    return [
        sys.executable,
        "-m",
        "attn",
        "run",
        experiment,
        "--workdir",
        str(workdir),
        *overrides,
    ]


def kill_mid_run(command: list[str], workdir: Path, after_step: int) -> list[int]:
    """Start ``command`` (an ``attn run``), SIGKILL it once ``workdir`` holds a checkpoint of
    ``after_step`` or later; the checkpoint steps it left."""
    process = subprocess.Popen(
        command, env=ENVIRONMENT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    latest = workdir / "checkpoints" / "latest"
    while time.monotonic() < deadline and process.poll() is None:
        steps = checkpoint_steps(latest)
        if steps and max(steps) >= after_step:
            break
        time.sleep(0.01)
    assert process.poll() is None, "training ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    return checkpoint_steps(latest)


def sweep_experiment(directory: Path, axes: dict | str) -> Path:
    """An experiment file in ``directory``: reverse's config (and :smoke) with a sweep() of
    ``grid(**axes)`` (``axes`` written as a Python literal), or returning the expression
    ``axes`` if it is a string (``attn.train.sweep``'s names are imported)."""
    path = directory / "sweep_experiment.py"
    returned = axes if isinstance(axes, str) else f"grid(**{axes!r})"
    path.write_text(
        "import importlib.util\n"
        "from attn.train.sweep import choice, grid, loguniform, random, uniform\n"
        f"spec = importlib.util.spec_from_file_location('reverse', {REVERSE!r})\n"
        "reverse = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(reverse)\n"
        "ARGS, get_config = reverse.ARGS, reverse.get_config\n"
        "def sweep(arg=None):\n"
        f"    return {returned}\n"
    )
    return path


def run_benchmark(module: str, *arguments: str) -> subprocess.CompletedProcess:
    """``python -m benchmarks.<module> ARGUMENTS`` from the repository root (in this process
    ``benchmarks`` is tests/benchmarks), output captured."""
    return subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *arguments],
        cwd=ROOT,
        env=ENVIRONMENT,
        capture_output=True,
        text=True,
        check=False,
    )
