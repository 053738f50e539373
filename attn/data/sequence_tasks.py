"""Reverse, copy and sort: ``length`` symbols from ``num_symbols``; the target is the input
reversed, unchanged, or sorted (the UvA deep-learning JAX tutorial 6 tasks).

Records: ``inputs`` and ``targets``, uint8 token ids ``[length]`` (symbol ``s`` is id
``s + 3``; see :mod:`attn.data.tokenizers`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np

from attn.data.builder import GeneratedBuilder, SizedConfig, split_seed, token_feature
from attn.data.tokenizers import NUM_SPECIAL, SymbolTokenizer

__all__ = ["AttnCopy", "AttnReverse", "AttnSort", "SequenceConfig", "symbol_tokenizer"]

_CHUNK = 8192  # examples drawn per numpy call: fast, and bounded memory for large sizes


@dataclasses.dataclass(eq=False)
class SequenceConfig(SizedConfig):
    """Sizes of a reverse/copy/sort dataset (defaults as in the UvA tutorial)."""

    num_train: int = 50_000
    num_validation: int = 1_000
    num_test: int = 10_000
    length: int = 16
    num_symbols: int = 10

    def __post_init__(self) -> None:
        if self.length < 1:
            raise ValueError(f"length must be >= 1, got {self.length}")
        if not 1 <= self.num_symbols <= 256 - NUM_SPECIAL:
            raise ValueError(f"num_symbols must be in [1, 253], got {self.num_symbols}")
        super().__post_init__()


def symbol_tokenizer(num_symbols: int) -> SymbolTokenizer:
    """Symbols ``"0" .. str(num_symbols - 1)``, space separated."""
    return SymbolTokenizer([str(i) for i in range(num_symbols)], separator=" ")


class _SequenceBuilder(GeneratedBuilder, skip_registration=True):
    BUILDER_CONFIGS = [SequenceConfig()]  # noqa: RUF012  (tfds reads this class attribute)

    def transform(self, inputs: np.ndarray) -> np.ndarray:
        """The target for a batch of inputs ``[n, length]``."""
        raise NotImplementedError

    def features(self) -> dict[str, Any]:
        return {"inputs": token_feature(), "targets": token_feature()}

    def generate(self, split: str) -> Iterator[dict[str, Any]]:
        config = self.builder_config
        rng = np.random.default_rng(split_seed(config.data_seed, split))
        remaining = config.num_examples(split)
        while remaining:
            n = min(remaining, _CHUNK)
            remaining -= n
            symbols = rng.integers(0, config.num_symbols, size=(n, config.length))
            inputs = (symbols + NUM_SPECIAL).astype(np.uint8)
            targets = self.transform(inputs)
            for x, y in zip(inputs, targets, strict=True):
                yield {"inputs": x, "targets": np.ascontiguousarray(y)}


class AttnReverse(_SequenceBuilder):
    """Target = the input reversed."""

    def transform(self, inputs: np.ndarray) -> np.ndarray:
        return inputs[:, ::-1]


class AttnCopy(_SequenceBuilder):
    """Target = the input (a sanity check: solvable position by position)."""

    def transform(self, inputs: np.ndarray) -> np.ndarray:
        return inputs


class AttnSort(_SequenceBuilder):
    """Target = the input sorted ascending."""

    def transform(self, inputs: np.ndarray) -> np.ndarray:
        return np.sort(inputs, axis=1)
