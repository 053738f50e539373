"""Records standing in for the catalog speech datasets (spoken_digit, speech_commands,
librispeech) under ``tfds.testing.mock_data``, shaped as array_record returns them (see
tests/data/mock_images.py for why records are passed through ``as_data_source_fn``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

_RNG = np.random.default_rng(0)


def _clip(seconds: float, rate: int, dtype=np.int16) -> np.ndarray:
    return (_RNG.standard_normal(int(seconds * rate)) * 3000).astype(dtype)


RECORDS = {
    "spoken_digit": {
        "train": [
            {
                "audio": _clip(0.3 + 0.05 * i, 8_000, np.int64),
                "label": i % 10,
                "audio/filename": f"{i % 10}_jackson_{i}.wav".encode(),
            }
            for i in range(8)
        ]
    },
    "speech_commands": {
        split: [{"audio": _clip(1.0, 16_000), "label": i % 12} for i in range(count)]
        for split, count in (("train", 6), ("validation", 3), ("test", 5))
    },
    "librispeech": {
        split: [
            {
                "speech": _clip(0.5 + 0.1 * i, 16_000),
                "text": b"HE SAID IT'S MINE" if i % 2 else b"A CHAPTER",
                "speaker_id": 7,
                "chapter_id": 3,
                "id": f"7-3-{i}".encode(),
            }
            for i in range(3)
        ]
        for split in ("train_clean100", "dev_clean", "test_clean", "test_other")
    },
}


@contextlib.contextmanager
def mock_speech_data() -> Iterator[None]:
    """Within: spoken_digit, speech_commands and librispeech read :data:`RECORDS`."""

    def as_data_source(self, split, **kwargs):
        splits = split if isinstance(split, list) else [split]
        sources = [RECORDS[self.name][str(s)] for s in splits]
        return sources if isinstance(split, list) else sources[0]

    with tfds.testing.mock_data(as_data_source_fn=as_data_source):
        yield
