"""scikit-learn's handwritten digits (UCI optdigits test set: 1,797 real 8x8 images of 0-9,
shipped inside the scikit-learn wheel) as a TFDS dataset with a fixed stratified split.

The split is scikit-learn's ``train_test_split(test_size=0.25, stratify=labels,
random_state=0)``: 1,347 train and 450 test images, the split REFERENCES.md's anchors (RBF
SVM 98.7%, logistic regression 96.9%) were measured on. Pixels (0-16 in the source) are
stored as uint8 0-255. There is no validation split: the test split is the held-out one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from attn.data.builder import tfds_code_path_fix

__all__ = ["DIGIT_NAMES", "AttnDigits", "digits_split"]

DIGIT_NAMES = tuple(str(digit) for digit in range(10))
TEST_SIZE = 0.25
SPLIT_SEED = 0


def digits_split() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images uint8 [1347, 8, 8, 1], labels int64), "test": (... [450, ...])}``."""
    from sklearn.datasets import load_digits  # the extra "vision"; not needed by import attn
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    train_x, test_x, train_y, test_y = train_test_split(
        images, digits.target, test_size=TEST_SIZE, stratify=digits.target, random_state=SPLIT_SEED
    )
    return {"train": (train_x, train_y), "test": (test_x, test_y)}


class AttnDigits(tfds_code_path_fix, tfds.core.GeneratorBasedBuilder):
    """``image`` uint8 ``[8, 8, 1]``, ``label`` 0-9; splits train (1,347) and test (450)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First version."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=DIGIT_NAMES),
                }
            ),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        del dl_manager  # the data ships with scikit-learn
        return {
            split: self._generate_examples(images, labels)
            for split, (images, labels) in digits_split().items()
        }

    def _generate_examples(
        self, images: np.ndarray, labels: np.ndarray
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            yield index, {"image": image, "label": int(label)}
