"""Attention variants: other attention functions than :func:`attn.attend`'s composition.

Linear attention is a different model, Performer an approximation of softmax attention and
Linformer attention over a learned projection of the keys; none computes ``attend``'s result,
so they are not values of ``attend(implementation=...)`` (see :mod:`attn.kernels`).

* :func:`linear_attention`, :func:`kernel_attention` -- weights ``phi(q) . phi(k)`` with
  O(T + S) cost (Katharopoulos et al. 2020), causal by chunked prefix sums.
* :func:`performer_attention` with :func:`random_features` and :func:`positive_features` --
  FAVOR+ (Choromanski et al. 2021).
* :func:`linformer_project` -- Linformer's projection (Wang et al. 2020):
  ``attn.attend(q, *linformer_project(k, v, e))``.
* :class:`Linear`, :class:`Performer`, :class:`Linformer` -- the same as configured objects
  with ``attend``'s call and masks: catalog kind ``"attention"``, selectable from configs
  (``model.attention_fn``) and by ``attn.nn.MultiHeadAttention(attention=...)``.

Shapes follow :func:`attn.attend`: q ``[B, T, N, H]``, k ``[B, S, K, H]``, v ``[B, S, K, Hv]``.
Imports jax only.
"""

from attn.variants.configured import Linear, Linformer, Performer
from attn.variants.linear import kernel_attention, linear_attention
from attn.variants.linformer import linformer_project
from attn.variants.performer import performer_attention, positive_features, random_features

__all__ = [
    "Linear",
    "Linformer",
    "Performer",
    "kernel_attention",
    "linear_attention",
    "linformer_project",
    "performer_attention",
    "positive_features",
    "random_features",
]
