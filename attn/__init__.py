"""attn: attention as pure, composable JAX functions.

``import attn`` needs jax alone; Flax modules live in :mod:`attn.nn`.
"""

from attn import catalog, masks, positional, scores, weighting
from attn.attend import attend

__all__ = ["attend", "catalog", "masks", "positional", "scores", "weighting"]
