"""Sharded parameters: the ("data", "fsdp") mesh of ``train.mesh``, where each parameter lives,
and a run on 8 fake CPU devices that trains what the unsharded run trains while each device
holds 1/fsdp of the parameters."""

import json
import subprocess
import sys

import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from attn import cli
from attn.train.config import validate
from attn.train.sharding import MeshOptions, mesh_shape, parameter_spec

from .helpers import ENVIRONMENT, ROOT, fake_devices, params_of, smoke

# One process, 8 fake devices (fixed when JAX starts): the same smoke run unsharded (data 8)
# and sharded (data 2 x fsdp 4); then the unsharded run's checkpoint restored onto the
# sharded layout. 13 symbols make the vocabulary 16, so that every parameter splits in 4.
EIGHT_DEVICES = """
import json, sys
from pathlib import Path
import jax
sys.path.insert(0, sys.argv[2])
from train.helpers import smoke
from attn.train import Experiment, train_and_evaluate
from attn.train.sharding import bytes_per_device

assert jax.device_count() == 8, jax.device_count()
root = Path(sys.argv[1])
options = {"data.num_symbols": 13, "train.num_steps": 3, "train.plot_examples": 0}
sharded = smoke(**options, **{"train.mesh.data": 2, "train.mesh.fsdp": 4})
train_and_evaluate(smoke(**options), root / "unsharded")
train_and_evaluate(sharded, root / "sharded")
report = {}
for name in ("sharded", "unsharded"):
    experiment = Experiment(sharded, root / name, read_only=True)
    experiment.restore()
    params = experiment.state["params"]
    report[name] = {
        "total": sum(x.nbytes for x in jax.tree.leaves(params)),
        "per_device": sorted(bytes_per_device(params).values()),
        "moments_per_device": sorted(bytes_per_device(experiment.state["opt_state"]).values()),
        "specs": sorted({str(x.sharding.spec) for x in jax.tree.leaves(params)}),
    }
    experiment.close()
print(json.dumps(report))
"""


@pytest.mark.slow
def test_fsdp_on_eight_devices_trains_the_unsharded_model_with_a_quarter_per_device(
    tmp_path, capsys
):
    result = subprocess.run(
        [sys.executable, "-c", EIGHT_DEVICES, str(tmp_path), str(ROOT / "tests")],
        env={**ENVIRONMENT, "XLA_FLAGS": fake_devices(8)},
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    want, got = params_of(tmp_path / "unsharded"), params_of(tmp_path / "sharded")
    assert want.keys() == got.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-7, err_msg=name)
    # Both checkpoints restore onto the sharded layout: every device holds a quarter.
    for restored in report.values():
        assert restored["per_device"] == [restored["total"] // 4] * 8, restored
        assert restored["total"] % 4 == 0 and len(restored["moments_per_device"]) == 8
        assert all("fsdp" in spec for spec in restored["specs"]), restored["specs"]
    # Adam's two moments are split like the parameters; a few scalars (counts, the learning
    # rate) are whole on every device.
    quarter = report["sharded"]["total"] // 4
    for held in report["sharded"]["moments_per_device"]:
        assert 2 * quarter <= held <= 2 * quarter + 64
    # `attn eval` on this process's one device reads the run of 8 (a mesh that fits here).
    assert cli.main(["eval", "--workdir", str(tmp_path / "sharded")]) == 0
    assert "best checkpoint (step 3) on test" in capsys.readouterr().out


def test_parameters_split_as_annotated_else_along_their_largest_divisible_dimension():
    assert parameter_spec(("fsdp", None), (32, 64), 4) == P("fsdp", None)
    assert parameter_spec((None, "fsdp"), (32, 64), 4) == P(None, "fsdp")
    assert parameter_spec(("fsdp", None), (30, 64), 4) == P(None, "fsdp")  # 30 does not split
    assert parameter_spec(None, (13, 32), 4) == P(None, "fsdp")
    assert parameter_spec(None, (64, 32), 4) == P("fsdp", None)
    assert parameter_spec(None, (13,), 4) == P()  # nothing divides: whole on every device
    assert parameter_spec(("fsdp", None), (32, 64), 1) == P()


def test_mesh_sizes_must_multiply_to_the_device_count():
    assert mesh_shape(MeshOptions(), 8) == (8, 1)
    assert mesh_shape(MeshOptions(data=2, fsdp=-1), 8) == (2, 4)
    assert mesh_shape(MeshOptions(data=-1, fsdp=8), 8) == (1, 8)
    assert mesh_shape(MeshOptions(data=2, fsdp=4), 8) == (2, 4)
    for options in (MeshOptions(data=3), MeshOptions(data=2, fsdp=2), MeshOptions(fsdp=16)):
        with pytest.raises(ValueError, match=r"train\.mesh: .* does not fit the 8 devices"):
            mesh_shape(options, 8)
    for options in (MeshOptions(data=-1, fsdp=-1), MeshOptions(data=0)):
        with pytest.raises(ValueError, match=r"train\.mesh: sizes must be >= 1"):
            mesh_shape(options, 8)


def test_a_mesh_that_does_not_fit_fails_validation_naming_the_key():
    with pytest.raises(ValueError, match=r"train\.mesh: .* does not fit the 1 devices"):
        validate(smoke(**{"train.mesh.fsdp": 2}))
