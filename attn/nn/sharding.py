"""Named mesh axes on parameters: flax's ``out_sharding`` metadata, read by the training loop.

A kernel annotated ``fsdp_axes("fsdp", None)`` is split along its first dimension over the
mesh axis ``"fsdp"`` when a run shards parameters (``train.mesh.fsdp > 1``, see
:mod:`attn.train.sharding`); it is whole on each device otherwise. ``eager_sharding`` is off,
so the modules still build without a mesh (flax would otherwise place an annotated parameter
on the mesh in context as it is created, and fail without one); the loop places them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FSDP", "fsdp_axes"]

FSDP = "fsdp"  # the mesh axis that parameters and optimizer state are split over


def fsdp_axes(*axes: str | None) -> dict[str, Any]:
    """Variable metadata naming the mesh axis of each dimension (``None``: not split), for
    ``nnx.Linear(..., kernel_metadata=fsdp_axes(FSDP, None))``."""
    return {"out_sharding": axes, "eager_sharding": False}
