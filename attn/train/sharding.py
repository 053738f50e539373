"""A run's device mesh and where its arrays live on it.

The mesh has two axes, ``("data", "fsdp")`` (``train.mesh``), over all devices of all
processes. A batch is split over both (every device gets its own rows). Parameters and the
optimizer state are whole on every device when ``fsdp`` is 1 (plain data parallelism); with
``fsdp > 1`` each is split over the ``fsdp`` axis (fully sharded data parallelism: a device
keeps ``1/fsdp`` of them, XLA gathers a layer's parameters where they are used). A parameter
is split as its flax ``out_sharding`` metadata names (:mod:`attn.nn.sharding`); a parameter
without one, or whose named dimension does not divide, is split along its largest dimension
that ``fsdp`` divides, and kept whole if none does.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import jax
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from attn.models.options import option
from attn.nn.sharding import FSDP

__all__ = [
    "BATCH",
    "MESH_AXES",
    "MeshOptions",
    "bytes_per_device",
    "make_mesh",
    "mesh_shape",
    "parameter_shardings",
    "parameter_spec",
    "state_shardings",
]

MESH_AXES = ("data", FSDP)
BATCH = P(MESH_AXES)  # a batch's rows are split over every device


@dataclasses.dataclass(frozen=True)
class MeshOptions:
    """``train.mesh``: devices along each mesh axis; their product is the device count, and
    one of them may be -1 (the devices left over)."""

    data: int = option(-1, minimum=-1)
    fsdp: int = option(1, minimum=-1)


def mesh_shape(options: MeshOptions, devices: int) -> tuple[int, int]:
    """``(data, fsdp)`` for ``devices`` devices; ValueError naming ``train.mesh`` if they do
    not fit."""
    sizes = {"data": options.data, "fsdp": options.fsdp}
    if 0 in sizes.values() or list(sizes.values()).count(-1) > 1:
        raise ValueError(f"train.mesh: sizes must be >= 1, one of them may be -1; got {sizes}")
    known = abs(options.data * options.fsdp)  # -1 counts as 1 here
    if devices % known or (-1 not in sizes.values() and known != devices):
        raise ValueError(
            f"train.mesh: {sizes} does not fit the {devices} devices (of all processes): the "
            "product of the sizes must be the device count"
        )
    return tuple(devices // known if size == -1 else size for size in sizes.values())


def make_mesh(options: MeshOptions) -> Mesh:
    """The ``("data", "fsdp")`` mesh over all devices (auto axes: XLA places what is not
    annotated, e.g. the activations)."""
    return jax.make_mesh(
        mesh_shape(options, jax.device_count()),
        MESH_AXES,
        axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
    )


def parameter_spec(named: tuple[str | None, ...] | None, shape: tuple[int, ...], fsdp: int) -> P:
    """Where a parameter of ``shape`` lives: split over ``"fsdp"`` along the dimension its
    annotation ``named`` gives, or else its largest dimension that ``fsdp`` divides."""
    if fsdp == 1:
        return P()
    if named and FSDP in named and shape[named.index(FSDP)] % fsdp == 0:
        return P(*(FSDP if axis == FSDP else None for axis in named))
    divisible = [d for d in range(len(shape)) if shape[d] % fsdp == 0]
    if not divisible:
        return P()
    largest = max(divisible, key=lambda d: shape[d])
    return P(*(FSDP if d == largest else None for d in range(len(shape))))


def parameter_shardings(abstract_params: nnx.State, mesh: Mesh) -> nnx.State:
    """A ``NamedSharding`` for each parameter of ``abstract_params`` (``nnx.Param`` variables,
    e.g. of ``nnx.eval_shape``), from their ``out_sharding`` metadata and shapes."""
    fsdp = mesh.shape[FSDP]

    def sharding(variable: nnx.Variable) -> nnx.Variable:
        named = variable.get_metadata().get("out_sharding")
        return variable.replace(
            NamedSharding(mesh, parameter_spec(named, variable.get_value().shape, fsdp))
        )

    return jax.tree.map(sharding, abstract_params, is_leaf=lambda x: isinstance(x, nnx.Variable))


def state_shardings(
    tx: optax.GradientTransformation, params: Any, shardings: Any, mesh: Mesh
) -> dict[str, Any]:
    """Shardings of the train state ``{"params", "opt_state", "step"}``: the optimizer's
    per-parameter statistics (Adam's moments) like their parameters, the rest whole."""
    whole = NamedSharding(mesh, P())
    opt_state = optax.tree_map_params(
        tx,
        lambda _, sharding: sharding,
        jax.eval_shape(tx.init, params),
        shardings,
        transform_non_params=lambda _: whole,
        is_leaf=lambda x: isinstance(x, NamedSharding),
    )
    return {"params": shardings, "opt_state": opt_state, "step": whole}


def bytes_per_device(tree: Any) -> dict[jax.Device, int]:
    """Bytes of ``tree``'s arrays held by each device of this process."""
    held: dict[jax.Device, int] = collections.Counter()
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            held[shard.device] += shard.data.nbytes
    return dict(held)
