"""Multi-query associative recall (MQAR; Zoology, Arora et al. 2023), as next-token data.

A sequence starts with ``n`` key-value pairs ``k1 v1 k2 v2 ...``; later each key appears
once more as a query, and the model must predict that key's value as the next token. Keys
and values come from disjoint halves of the vocabulary and are distinct within a sequence.
Query positions follow Zoology's power law (``power_a``; small gaps are likely), and every
other position holds a random key or value token (Zoology's ``random_non_queries``).

Unlike Zoology, which keeps the answer only in the labels, the answer is also the next
input token, so ``targets`` is literally ``inputs`` shifted by one. A causal model cannot
see it early, so the task is the same. Only query positions are scored.

Records: ``inputs``, ``targets`` int32 ``[seq_len]``; ``query_mask`` uint8 ``[seq_len]``
(1 where ``targets`` is an answer).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from typing import Any

import numpy as np

from attn.data.builder import GeneratedBuilder, SizedConfig, split_seed, token_feature
from attn.data.tokenizers import NUM_SPECIAL, SymbolTokenizer

__all__ = ["AttnMqar", "MqarConfig", "mqar_tokenizer"]


@dataclasses.dataclass(eq=False)
class MqarConfig(SizedConfig):
    """MQAR sizes. ``num_kv_pairs`` is ``(low, high)``: each example draws n in [low, high]."""

    num_train: int = 100_000
    num_validation: int = 3_000
    num_test: int = 3_000
    seq_len: int = 64
    num_kv_pairs: tuple[int, int] = (8, 8)
    vocab_size: int = 8192
    power_a: float = 0.01

    def __post_init__(self) -> None:
        pairs = self.num_kv_pairs
        pairs = (pairs, pairs) if isinstance(pairs, int) else tuple(pairs)
        if len(pairs) != 2 or not 1 <= pairs[0] <= pairs[1]:
            raise ValueError(f"num_kv_pairs must be n >= 1 or (low, high), got {pairs}")
        self.num_kv_pairs = pairs
        if 4 * pairs[1] > self.seq_len:
            raise ValueError(
                f"seq_len={self.seq_len} too short for {pairs[1]} key-value pairs: the pairs and "
                f"their queries need 4 * num_kv_pairs <= seq_len"
            )
        if self.num_keys < pairs[1]:
            raise ValueError(f"vocab_size={self.vocab_size} leaves fewer keys than num_kv_pairs")
        if not 0 < self.power_a <= 1:
            raise ValueError(f"power_a must be in (0, 1], got {self.power_a}")
        super().__post_init__()

    @property
    def num_keys(self) -> int:
        return (self.vocab_size - NUM_SPECIAL) // 2


def mqar_tokenizer(vocab_size: int) -> SymbolTokenizer:
    """Keys ``k0, k1, ...`` then values ``v0, v1, ...``; ``vocab_size`` ids in all."""
    num_keys = (vocab_size - NUM_SPECIAL) // 2
    num_values = vocab_size - NUM_SPECIAL - num_keys
    return SymbolTokenizer(
        [f"k{i}" for i in range(num_keys)] + [f"v{i}" for i in range(num_values)]
    )


@functools.lru_cache(maxsize=256)
def _gap_probabilities(space: int, power_a: float) -> np.ndarray:
    # Zoology: p(gap = g) proportional to a * g**(a - 1) for g = 1..space.
    p = power_a * np.arange(1, space + 1, dtype=np.float64) ** (power_a - 1)
    return p / p.sum()


def mqar_example(rng: np.random.Generator, config: MqarConfig) -> dict[str, np.ndarray]:
    """One example (see the module docstring for the layout)."""
    low, high = config.num_kv_pairs
    n = int(rng.integers(low, high + 1))
    num_keys = config.num_keys
    num_values = config.vocab_size - NUM_SPECIAL - num_keys
    keys = NUM_SPECIAL + rng.choice(num_keys, size=n, replace=False)
    values = NUM_SPECIAL + num_keys + rng.choice(num_values, size=n, replace=False)
    sequence = rng.integers(NUM_SPECIAL, config.vocab_size, size=config.seq_len + 1)
    sequence[0 : 2 * n : 2] = keys
    sequence[1 : 2 * n : 2] = values
    space = (config.seq_len - 2 * n) // 2
    gaps = rng.choice(space, size=n, replace=False, p=_gap_probabilities(space, config.power_a))
    query_positions = 2 * n + 2 * gaps
    sequence[query_positions] = keys
    sequence[query_positions + 1] = values
    query_mask = np.zeros(config.seq_len, dtype=np.uint8)
    query_mask[query_positions] = 1
    sequence = sequence.astype(np.int32)
    return {"inputs": sequence[:-1], "targets": sequence[1:], "query_mask": query_mask}


class AttnMqar(GeneratedBuilder):
    """The MQAR dataset builder."""

    BUILDER_CONFIGS = [MqarConfig()]  # noqa: RUF012  (tfds reads this class attribute)

    def features(self) -> dict[str, Any]:
        return {
            "inputs": token_feature(np.int32),
            "targets": token_feature(np.int32),
            "query_mask": token_feature(np.uint8),
        }

    def generate(self, split: str) -> Iterator[dict[str, Any]]:
        config = self.builder_config
        rng = np.random.default_rng(split_seed(config.data_seed, split))
        for _ in range(config.num_examples(split)):
            yield mqar_example(rng, config)
