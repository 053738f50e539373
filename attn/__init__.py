"""attn: attention as pure, composable JAX functions.

``import attn`` needs jax alone. The Flax and training subpackages (:mod:`attn.nn`,
:mod:`attn.models`, :mod:`attn.data`, :mod:`attn.train`) are imported on first use, so
``attn.nn.MultiHeadAttention`` works after a plain ``import attn``.
"""

import importlib
from types import ModuleType

from attn import catalog, compat, kernels, masks, positional, scores, variants, weighting
from attn.attend import attend
from attn.merge import merge

__all__ = [
    "attend",
    "catalog",
    "compat",
    "data",
    "kernels",
    "masks",
    "merge",
    "models",
    "nn",
    "positional",
    "scores",
    "train",
    "variants",
    "weighting",
]

# Subpackages that need flax, optax, orbax or tensorflow-datasets: imported by attribute access.
_LAZY_SUBPACKAGES = frozenset({"data", "models", "nn", "train"})


def __getattr__(name: str) -> ModuleType:
    # PEP 562: called only for names not found above.
    if name in _LAZY_SUBPACKAGES:
        return importlib.import_module(f"attn.{name}")
    raise AttributeError(f"module 'attn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY_SUBPACKAGES)
