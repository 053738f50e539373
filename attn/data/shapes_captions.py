"""Shapes with captions: RGB canvases of 1-3 coloured shapes and a templated caption that names
them in reading order, with each object's pixel mask, so that where a captioner looks while it
says a word can be scored exactly.

An object is a colour (red, green, blue, yellow, magenta, cyan), a shape (square, circle,
triangle) and a cell of a 3x3 grid; its size (60-90% of the cell), its offset in the cell, its
colour's brightness and the background noise are random. The caption lists the objects in
reading order (by cell), joined by their relation: ``"a red circle left of a blue square above
a green triangle"`` (``left of`` when the next object sits in the same row, ``above`` when it
sits in a lower row).

Held-out combinations: a fixed share of the (colour, shape, cell) triples (the same for every
seed of the data) never occurs in the train split; every validation and test image shows at
least one of them. Every colour-shape pair, and every colour and shape in every cell, still
occurs in training, so the test asks for new combinations of known words and places.

Records: ``image`` uint8 ``[S, S, 3]``; ``caption`` uint8 token ids (see
:func:`caption_tokenizer`, no BOS/EOS); ``object_map`` uint8 ``[S, S]``: 0 background, ``k``
the pixels of the ``k``-th object named in the caption.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from attn.data.builder import GeneratedBuilder, SizedConfig, split_seed, token_feature
from attn.data.tokenizers import SymbolTokenizer

__all__ = [
    "COLOURS",
    "SHAPES",
    "AttnShapesCaptions",
    "ShapesCaptionsConfig",
    "caption_tokenizer",
    "held_out_triples",
    "object_of_tokens",
]

COLOURS = {
    "red": (1.0, 0.1, 0.1),
    "green": (0.1, 0.85, 0.1),
    "blue": (0.15, 0.25, 1.0),
    "yellow": (1.0, 0.9, 0.1),
    "magenta": (0.95, 0.1, 0.95),
    "cyan": (0.1, 0.9, 0.95),
}
SHAPES = ("square", "circle", "triangle")
GRID = 3  # cells per side
_RELATIONS = ("left", "of", "above")
_HELD_OUT_SEED = 20151  # fixed: the held-out triples do not change with data_seed


def caption_tokenizer() -> SymbolTokenizer:
    """Word tokens: "a", the colours, the shapes, "left", "of", "above"."""
    return SymbolTokenizer(["a", *COLOURS, *SHAPES, *_RELATIONS])


@dataclasses.dataclass(eq=False)
class ShapesCaptionsConfig(SizedConfig):
    """Sizes: ``image_size`` pixels per side (a multiple of 3 plus up to 2), up to
    ``max_objects`` objects (1-3), ``held_out`` share of the (colour, shape, cell) triples kept
    out of training."""

    num_train: int = 20_000
    num_validation: int = 500
    num_test: int = 1_000
    image_size: int = 32
    max_objects: int = 3
    held_out: float = 0.15

    def __post_init__(self) -> None:
        if not isinstance(self.image_size, int) or not 12 <= self.image_size <= 256:
            raise ValueError(f"image_size must be an int in [12, 256], got {self.image_size!r}")
        if not isinstance(self.max_objects, int) or not 1 <= self.max_objects <= 3:
            raise ValueError(f"max_objects must be 1, 2 or 3, got {self.max_objects!r}")
        if not 0.0 < self.held_out <= 0.3:
            raise ValueError(f"held_out must be in (0, 0.3], got {self.held_out!r}")
        super().__post_init__()


Triple = tuple[int, int, int]  # (colour index, shape index, cell index)


def held_out_triples(share: float) -> frozenset[Triple]:
    """The (colour, shape, cell) triples never shown in training: ``share`` of all 162,
    drawn once with a fixed seed and redrawn until each colour-shape, colour-cell and
    shape-cell pair keeps a triple in training."""
    rng = np.random.default_rng(_HELD_OUT_SEED)
    triples = list(itertools.product(range(len(COLOURS)), range(len(SHAPES)), range(GRID**2)))
    count = max(1, round(share * len(triples)))
    while True:
        chosen = frozenset(triples[i] for i in rng.choice(len(triples), count, replace=False))
        kept = [t for t in triples if t not in chosen]
        pairs = [{(t[a], t[b]) for t in kept} for a, b in ((0, 1), (0, 2), (1, 2))]
        sizes = [len(COLOURS) * len(SHAPES), len(COLOURS) * GRID**2, len(SHAPES) * GRID**2]
        if all(len(p) == n for p, n in zip(pairs, sizes, strict=True)):
            return chosen


def _shape_mask(shape: str, size: int) -> np.ndarray:
    """bool ``[size, size]``: a filled square, circle or upward triangle."""
    rows, columns = np.mgrid[0:size, 0:size] + 0.5
    if shape == "square":
        return np.ones((size, size), bool)
    if shape == "circle":
        centre = size / 2
        return (rows - centre) ** 2 + (columns - centre) ** 2 <= centre**2
    # triangle: apex at the top centre, base along the bottom row
    half_width = columns - size / 2
    return np.abs(half_width) <= rows / 2


def _caption(objects: list[Triple]) -> str:
    words = []
    for index, (colour, shape, cell) in enumerate(objects):
        if index:
            previous_row = objects[index - 1][2] // GRID
            words += ["left", "of"] if cell // GRID == previous_row else ["above"]
        words += ["a", list(COLOURS)[colour], SHAPES[shape]]
    return " ".join(words)


def object_of_tokens(tokens: np.ndarray) -> np.ndarray:
    """int32 like ``tokens``: which object (1, 2, 3) each colour or shape word names, 0 for
    every other token. Objects are counted by their article "a"."""
    tokenizer = caption_tokenizer()
    article = tokenizer.encode("a")[0]
    named = set(tokenizer.encode(" ".join([*COLOURS, *SHAPES])))
    tokens = np.asarray(tokens)
    counts = np.cumsum(tokens == article, axis=-1)
    return np.where(np.isin(tokens, list(named)), counts, 0).astype(np.int32)


class AttnShapesCaptions(GeneratedBuilder):
    """The dataset (see the module docstring)."""

    BUILDER_CONFIGS = [ShapesCaptionsConfig()]  # noqa: RUF012  (tfds reads this class attribute)

    def features(self) -> dict[str, tfds.features.FeatureConnector]:
        size = self.builder_config.image_size
        return {
            "image": tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8),
            "caption": token_feature(),
            "object_map": tfds.features.Tensor(shape=(size, size), dtype=np.uint8),
        }

    def generate(self, split: str) -> Iterator[dict[str, Any]]:
        config = self.builder_config
        rng = np.random.default_rng(split_seed(config.data_seed, split))
        held_out = held_out_triples(config.held_out)
        tokenizer = caption_tokenizer()
        for _ in range(config.num_examples(split)):
            objects = _draw_objects(rng, config.max_objects, held_out, split == "train")
            image, object_map = _render(rng, objects, config.image_size)
            yield {
                "image": image,
                "caption": np.asarray(tokenizer.encode(_caption(objects)), np.uint8),
                "object_map": object_map,
            }


def _draw_objects(
    rng: np.random.Generator, max_objects: int, held_out: frozenset[Triple], train: bool
) -> list[Triple]:
    """1..max_objects objects in distinct cells, in reading order: none held out for
    training, at least one held out otherwise."""
    while True:
        count = int(rng.integers(1, max_objects + 1))
        cells = sorted(rng.choice(GRID**2, count, replace=False).tolist())
        objects = [
            (int(rng.integers(len(COLOURS))), int(rng.integers(len(SHAPES))), cell)
            for cell in cells
        ]
        novel = sum(triple in held_out for triple in objects)
        if (novel == 0) if train else (novel > 0):
            return objects


def _render(
    rng: np.random.Generator, objects: list[Triple], image_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The uint8 image ``[S, S, 3]`` and object map ``[S, S]`` (object ``k`` = k-th named)."""
    cell_size = image_size // GRID
    margin = (image_size - GRID * cell_size) // 2
    canvas = rng.uniform(0.0, 0.12, (image_size, image_size, 3))
    object_map = np.zeros((image_size, image_size), np.uint8)
    for number, (colour, shape, cell) in enumerate(objects, start=1):
        size = int(rng.integers(round(0.6 * cell_size), round(0.9 * cell_size) + 1))
        row = margin + (cell // GRID) * cell_size + int(rng.integers(0, cell_size - size + 1))
        column = margin + (cell % GRID) * cell_size + int(rng.integers(0, cell_size - size + 1))
        mask = _shape_mask(SHAPES[shape], size)
        brightness = rng.uniform(0.75, 1.0)
        rgb = np.asarray(list(COLOURS.values())[colour]) * brightness
        region = canvas[row : row + size, column : column + size]
        region[mask] = rgb + rng.normal(0.0, 0.03, (int(mask.sum()), 3))
        object_map[row : row + size, column : column + size][mask] = number
    return np.clip(np.round(canvas * 255), 0, 255).astype(np.uint8), object_map
