"""Image datasets of the TFDS catalog (mnist, cifar10, coco_captions) prepared without
TensorFlow: tfds 4.9.10 reads the mnist and cifar10 downloads through ``tf.io.gfile``, and
builds coco_captions' info with ``tf.int64``. The replacements below keep the builders'
names, versions, features and records, so data tfds itself prepared is reused.
"""

from __future__ import annotations

import gzip
import types
from collections.abc import Iterator
from typing import Any
from unittest import mock

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

__all__ = ["IMAGE_OVERRIDES"]


def _read(path: Any) -> bytes:
    data = epath.Path(path).read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _mnist_examples(
    self: Any, num_examples: int, data_path: Any, label_path: Any
) -> Iterator[tuple[int, dict[str, Any]]]:
    # The idx files: a 16-byte header before the images, 8 bytes before the labels.
    images = np.frombuffer(_read(data_path), np.uint8, offset=16)
    images = images[: num_examples * 28 * 28].reshape(num_examples, 28, 28, 1)
    labels = np.frombuffer(_read(label_path), np.uint8, offset=8)[:num_examples]
    for index in range(num_examples):
        yield index, {"image": images[index], "label": int(labels[index])}


def _cifar_examples(
    self: Any, split_prefix: str, filepaths: Any
) -> Iterator[tuple[int, dict[str, Any]]]:
    # Binary batches: per image, its label bytes then 3 x 32 x 32 channel-major pixels.
    label_keys = self._cifar_info.label_keys
    record_size = len(label_keys) + 3 * 32 * 32
    index = 0
    for path in filepaths:
        records = np.frombuffer(_read(path), np.uint8).reshape(-1, record_size)
        for record in records:
            example: dict[str, Any] = {
                key: int(label) for key, label in zip(label_keys, record, strict=False)
            }
            example["id"] = f"{split_prefix}{index:05d}"
            example["image"] = record[len(label_keys) :].reshape(3, 32, 32).transpose(1, 2, 0)
            yield index, example
            index += 1


def _coco_captions_info(self: Any) -> tfds.core.DatasetInfo:
    # Coco._info names one dtype as tf.int64 (tfds's only TensorFlow use there): the NumPy
    # dtype is the same feature.
    from tensorflow_datasets.object_detection import coco

    with mock.patch.object(coco, "tf", types.SimpleNamespace(int64=np.int64)):
        return tfds.builder_cls("coco_captions")._info(self)


IMAGE_OVERRIDES: dict[str, dict[str, Any]] = {
    "mnist": {"_generate_examples": _mnist_examples},
    "cifar10": {"_generate_examples": _cifar_examples},
    "coco_captions": {"_info": _coco_captions_info},
}
