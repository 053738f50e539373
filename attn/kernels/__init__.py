"""Fast implementations of :func:`attn.attend`'s composition, and efficient attention variants.

* :func:`chunked_attention` -- flash-style online softmax over key tiles with a custom VJP and
  tile skipping (``attend(..., implementation="chunked")``).
* :func:`pallas_attention` -- the same with a Pallas forward kernel (GPU; interpreted elsewhere).
* :func:`merge` -- combine attention over disjoint key sets from their log-sum-exp rows.
* :func:`linear_attention`, :func:`performer_attention` (with :func:`random_features`),
  :func:`linformer_project` -- efficient approximations with O(T + S) cost.
* :mod:`attn.kernels.variants` -- linear, Performer and Linformer attention as configured
  objects with ``attend``'s call and masks: catalog kind ``"attention"``, selectable from
  configs (``model.attention_fn``) and by ``attn.nn.MultiHeadAttention(attention=...)``.

Imports jax and numpy only; optional kernel libraries are imported lazily where dispatched to.
"""

from attn.kernels.chunked import chunked_attention
from attn.kernels.linear import kernel_attention, linear_attention
from attn.kernels.linformer import linformer_project
from attn.kernels.merge import merge
from attn.kernels.pallas import pallas_attention
from attn.kernels.performer import performer_attention, positive_features, random_features
from attn.kernels.tiling import TilePlan, plan_tiles

__all__ = [
    "TilePlan",
    "chunked_attention",
    "kernel_attention",
    "linear_attention",
    "linformer_project",
    "merge",
    "pallas_attention",
    "performer_attention",
    "plan_tiles",
    "positive_features",
    "random_features",
]
