"""Base TFDS builder for tasks generated locally: deterministic, array_record, no downloads.

A subclass defines a ``Config`` (a :class:`SizedConfig` whose fields are the sizes), its
``features()`` and ``generate(split, rng_seed)``. The config name is derived from the fields,
so each size lands in its own folder ``data_dir/<builder>/<config name>/<version>`` and is
generated once, then reused.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

__all__ = [
    "SPLITS",
    "GeneratedBuilder",
    "SizedConfig",
    "split_seed",
    "tfds_code_path_fix",
    "token_feature",
]

SPLITS = ("train", "validation", "test")


def split_seed(data_seed: int, split: str) -> list[int]:
    """Entropy for ``np.random.default_rng``: one independent stream per split."""
    return [data_seed, SPLITS.index(split)]


@dataclasses.dataclass(eq=False)
class SizedConfig(tfds.core.BuilderConfig):
    """A builder config whose name spells out its fields (``train50000_val1000_..._length16``)."""

    name: str = ""
    num_train: int = 1000
    num_validation: int = 100
    num_test: int = 100
    data_seed: int = 0

    def __post_init__(self) -> None:
        # tfds cannot write an empty split, so every split holds at least one example.
        for field, least in (
            ("num_train", 1),
            ("num_validation", 1),
            ("num_test", 1),
            ("data_seed", 0),
        ):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"{field} must be an int >= {least}, got {value!r}")
        if not self.name:
            self.name = "_".join(
                f"{_SHORT.get(field.name, field.name.removeprefix('num_'))}"
                f"{_slug(getattr(self, field.name))}"
                for field in dataclasses.fields(self)
                if field.name not in _BASE_FIELDS
            )

    def num_examples(self, split: str) -> int:
        return getattr(self, f"num_{split}")


_BASE_FIELDS = frozenset(f.name for f in dataclasses.fields(tfds.core.BuilderConfig))
_SHORT = {"num_validation": "val", "data_seed": "seed"}


def _slug(value: Any) -> str:
    # Config names become folder names: keep them to [A-Za-z0-9_-].
    if isinstance(value, (tuple, list)):
        return "-".join(_slug(v) for v in value)
    return str(value).replace(".", "p").replace("-", "m")


class tfds_code_path_fix:  # lower case: a mixin named for the workaround it is
    """Mixin: a ``code_path`` that never needs the ``importlib_resources`` backport.

    tfds 4.9.10 reads ``importlib_resources.abc`` in ``DatasetBuilder.code_path`` when
    preparing a builder defined in a package, but only declares that dependency for
    Python < 3.9 (tensorflow/datasets#11212), so preparing fails with ModuleNotFoundError.
    ``_code_path_of`` names the class whose module holds ``checksums.tsv``, if any.
    """

    _code_path_of: ClassVar[type | None] = None

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(inspect.getfile(cls._code_path_of or cls))


class GeneratedBuilder(tfds_code_path_fix, tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Splits train/validation/test of ``num_*`` examples, written in generation order."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First version."}

    def features(self) -> dict[str, tfds.features.FeatureConnector]:
        raise NotImplementedError

    def generate(self, split: str) -> Iterator[dict[str, Any]]:
        """Yields ``config.num_examples(split)`` examples, deterministically from the seed."""
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        # disable_shuffling keeps records in generation order: index i is the i-th example.
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(self.features()), disable_shuffling=True
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        del dl_manager  # Nothing to download: everything is generated from the seed.
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
        count = 0
        for count, example in enumerate(self.generate(split), start=1):
            yield count - 1, example
        expected = self.builder_config.num_examples(split)
        if count != expected:
            raise RuntimeError(f"{self.name} generated {count} {split} examples, not {expected}")


def token_feature(dtype: type = np.uint8) -> tfds.features.Tensor:
    """A variable-length 1-D token array stored as raw bytes (no int64 upcast on disk)."""
    return tfds.features.Tensor(shape=(None,), dtype=dtype, encoding=tfds.features.Encoding.BYTES)
