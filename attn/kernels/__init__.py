"""Implementations of :func:`attn.attend`'s composition: the same function, computed differently.

* ``dense`` (:mod:`attn.kernels.dense`) -- the composition with the full ``[B, N, T, S]``
  logits and weights; runs every combination of components.
* :func:`chunked_attention` -- flash-style online softmax over key tiles with a custom VJP and
  tile skipping (``attend(..., implementation="chunked")``).
* :func:`pallas_attention` -- the same with a Pallas forward kernel (GPU; interpreted elsewhere).
* ``cudnn`` (:mod:`attn.kernels.jax_nn`) -- ``jax.nn.dot_product_attention`` on GPU.
* :func:`ring_attention` -- context parallelism: the sequence split over a mesh axis, key/value
  blocks passed around the ring of its devices (``attend(..., implementation="ring")``).

:mod:`attn.kernels.dispatch` holds the table of implementations that ``attend`` runs from.
Other attention functions (linear, Performer, Linformer) live in :mod:`attn.variants`; merging
partial results is :func:`attn.merge`.

Imports jax and numpy only; optional kernel libraries are imported lazily where dispatched to.
"""

from attn.kernels.chunked import chunked_attention
from attn.kernels.pallas import pallas_attention
from attn.kernels.ring import CONTEXT_AXIS, ring_attention
from attn.kernels.tiling import TilePlan, plan_tiles

__all__ = [
    "CONTEXT_AXIS",
    "TilePlan",
    "chunked_attention",
    "pallas_attention",
    "plan_tiles",
    "ring_attention",
]
