"""ListOps with the Long Range Arena generator's semantics (Tay et al. 2020), seeded.

A tree is drawn as in LRA's ``generate_tree``: below ``max_depth`` a node is an operator
with probability 0.25 (else a digit 0-9); an operator (MIN, MAX, MED, SUM_MOD) takes 2 to
``max_args`` children. Trees whose token count is strictly between ``min_length`` and
``max_length`` are kept, without duplicates (test, validation and train are disjoint); the
label is the tree's value 0-9 (MED takes the integer part of the median, SUM_MOD the sum
mod 10).

Tokens are LRA's symbols ``[MIN [MAX [MED [SM ] 0..9`` without its parentheses, which
repeat what the brackets already say. (LRA's own pipeline tokenized with a word tokenizer
that also dropped ``]`` and the ``[``, losing where lists end; we keep ``]``.)

Records: ``inputs`` uint8 token ids ``[< max_length]``, ``targets`` int32 label.
"""

from __future__ import annotations

import dataclasses
import random
import statistics
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from attn.data.builder import GeneratedBuilder, SizedConfig, split_seed, token_feature
from attn.data.tokenizers import NUM_SPECIAL, SymbolTokenizer

__all__ = ["OPERATORS", "SYMBOLS", "AttnListops", "ListopsConfig", "listops_tokenizer"]

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
SYMBOLS = (*OPERATORS, END, *(str(v) for v in range(10)))
_VALUE_P = 0.25  # LRA's VALUE_P: an operator is drawn when random() <= 0.25
_END_ID = NUM_SPECIAL + SYMBOLS.index(END)
_DIGIT_ID = NUM_SPECIAL + SYMBOLS.index("0")
# Held-out splits are drawn first so that train can exclude them.
_GENERATION_ORDER = ("test", "validation", "train")


def listops_tokenizer() -> SymbolTokenizer:
    """The 15 ListOps symbols, space separated."""
    return SymbolTokenizer(SYMBOLS)


@dataclasses.dataclass(eq=False)
class ListopsConfig(SizedConfig):
    """Sizes; the defaults are LRA's (96k/2k/2k, depth 10, 10 args, 500 < length < 2000)."""

    num_train: int = 96_000
    num_validation: int = 2_000
    num_test: int = 2_000
    max_depth: int = 10
    max_args: int = 10
    min_length: int = 500
    max_length: int = 2000

    def __post_init__(self) -> None:
        if self.max_depth < 1 or self.max_args < 2:
            raise ValueError(f"need max_depth >= 1 and max_args >= 2, got {self}")
        if not 0 <= self.min_length < self.max_length - 1:
            raise ValueError(
                f"need 0 <= min_length < max_length - 1, got {self.min_length}, {self.max_length}"
            )
        super().__post_init__()


class _TooLong(Exception):
    """Raised to abandon a tree as soon as it reaches ``max_length`` tokens."""


def _subtree(rng: random.Random, depth: int, config: ListopsConfig, tokens: list[int]) -> int:
    """Appends a subtree's token ids in prefix order and returns its value."""
    if depth >= config.max_depth or rng.random() > _VALUE_P:
        value = rng.randrange(10)
        tokens.append(_DIGIT_ID + value)
    else:
        operator = rng.randrange(len(OPERATORS))
        tokens.append(NUM_SPECIAL + operator)
        args = [
            _subtree(rng, depth + 1, config, tokens) for _ in range(rng.randint(2, config.max_args))
        ]
        tokens.append(_END_ID)
        value = _apply(OPERATORS[operator], args)
    # Stopping early changes nothing kept: a tree this long would be rejected anyway.
    if len(tokens) >= config.max_length:
        raise _TooLong
    return value


def _apply(operator: str, args: list[int]) -> int:
    if operator == "[MIN":
        return min(args)
    if operator == "[MAX":
        return max(args)
    if operator == "[MED":
        return int(statistics.median(args))  # as LRA's int(np.median(...))
    return sum(args) % 10


def listops_examples(config: ListopsConfig, split: str) -> Iterator[tuple[np.ndarray, int]]:
    """(token ids, label) for ``split``, excluding every tree of the splits drawn before it."""
    seen: set[bytes] = set()
    for current in _GENERATION_ORDER:
        rng = random.Random(f"listops/{split_seed(config.data_seed, current)}")
        wanted, attempts = config.num_examples(current), 0
        produced = 0
        while produced < wanted:
            attempts += 1
            if attempts > 1000 * wanted + 100_000:
                raise RuntimeError(f"listops: cannot find {wanted} distinct trees for {config}")
            tokens: list[int] = []
            try:
                label = _subtree(rng, 1, config, tokens)  # LRA starts at depth 1
            except _TooLong:
                continue
            ids = np.array(tokens, dtype=np.uint8)
            key = ids.tobytes()
            if len(tokens) <= config.min_length or key in seen:
                continue
            seen.add(key)
            produced += 1
            if current == split:
                yield ids, label
        if current == split:
            return


class AttnListops(GeneratedBuilder):
    """The ListOps dataset builder."""

    BUILDER_CONFIGS = [ListopsConfig()]  # noqa: RUF012  (tfds reads this class attribute)

    def features(self) -> dict[str, Any]:
        return {"inputs": token_feature(), "targets": tfds.features.Scalar(dtype=np.int32)}

    def generate(self, split: str) -> Iterator[dict[str, Any]]:
        for ids, label in listops_examples(self.builder_config, split):
            yield {"inputs": ids, "targets": label}
