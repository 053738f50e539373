"""Records standing in for the catalog image datasets under ``tfds.testing.mock_data``.

mock_data's own random records break batched reads in tfds 4.9.10 (its ``__getitems__`` is a
partial that never receives ``self``; see tests/data/test_catalog_datasets.py), so tests pass
these through ``as_data_source_fn``: tfds still resolves the builder, only the records are
ours, with the features' shapes and types as array_record returns them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

SHAPES = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
CAPTIONS = [b"A dog sleeps on a red bed.", b"Two people ride bikes", b"a cat", b"A clock."]


def records(name: str, split: str, count: int = 6) -> list[dict]:
    rng = np.random.default_rng(len(split))
    if name == "coco_captions":
        return [
            {
                # COCO images vary in size: the loader cuts the centre square.
                "image": rng.integers(0, 256, (30 + 3 * i, 40 - 2 * i, 3), dtype=np.uint8),
                "captions": {
                    "text": np.asarray([CAPTIONS[i % 4], CAPTIONS[(i + 1) % 4]], object),
                    "id": np.asarray([2 * i, 2 * i + 1]),
                },
            }
            for i in range(count)
        ]
    return [
        {"image": rng.integers(0, 256, SHAPES[name], dtype=np.uint8), "label": i % 10}
        for i in range(count)
    ]


@contextlib.contextmanager
def mock_image_data() -> Iterator[None]:
    """Within: mnist, cifar10 and coco_captions read :func:`records`."""

    def as_data_source(self, split, **kwargs):
        splits = split if isinstance(split, list) else [split]
        sources = [records(self.name, str(name)) for name in splits]
        return sources if isinstance(split, list) else sources[0]

    with tfds.testing.mock_data(as_data_source_fn=as_data_source):
        yield
