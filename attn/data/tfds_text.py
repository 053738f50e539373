"""Text datasets of the TFDS catalog (tiny_shakespeare, imdb_reviews), prepared and read
without TensorFlow.

Reading goes through ``tfds.data_source`` (array_record). Preparing (download + write) uses
tfds's own builder classes, subclassed only where tfds 4.9.10 needs TensorFlow or more:

- ``code_path`` imports ``importlib_resources``, which tfds declares only for Python < 3.9
  (tensorflow/datasets#11212);
- tiny_shakespeare reads its download with ``tf.io.gfile``, and imdb_reviews opens its
  archive through ``tf.io.gfile`` (in ``dl_manager.iter_archive``).

The subclasses keep the builder's name, config and version, so they write exactly the
folder tfds itself writes, and data prepared either way is reused.
"""

from __future__ import annotations

import math
import os
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from attn.data.builder import tfds_code_path_fix
from attn.data.locks import preparation_lock
from attn.data.tokenizers import NUM_SPECIAL

__all__ = [
    "NO_GCS",
    "LmWindows",
    "as_bytes",
    "byte_ids",
    "load_catalog_splits",
    "prepare_catalog_dataset",
]


def as_bytes(text: str | bytes | np.ndarray) -> bytes:
    """TFDS text features arrive as bytes from array_record, as str from ``mock_data``."""
    if isinstance(text, np.ndarray):
        text = text.item()
    return text.encode("utf-8") if isinstance(text, str) else bytes(text)


def _tiny_shakespeare_splits(self: Any, dl_manager: tfds.download.DownloadManager) -> list:
    # tfds's tiny_shakespeare split generator with the tf.io.gfile read swapped for epath
    # (same URL, same 90/5/5 split, same examples).
    path = epath.Path(dl_manager.download(_TINY_SHAKESPEARE_URL))
    if path.is_dir():
        path = path / "input.txt"
    text = path.read_text()
    i = int(len(text) * 0.9)
    train_text, text = text[:i], text[i:]
    i = int(len(text) * 0.5)
    validation_text, test_text = text[:i], text[i:]
    return [
        tfds.core.SplitGenerator(name=name, gen_kwargs={"split_key": name, "split_text": part})
        for name, part in (
            ("train", train_text),
            ("validation", validation_text),
            ("test", test_text),
        )
    ]


# tfds would otherwise ask GCS for a prepared copy (a network probe); those copies are
# tfrecord, which data sources cannot read anyway.
NO_GCS = tfds.download.DownloadConfig(try_download_gcs=False)


def _iter_tar(path: epath.Path) -> Iterator[tuple[str, Any]]:
    """(member path, file object) pairs, as ``dl_manager.iter_archive`` gives, without TF."""
    with path.open("rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
        for member in tar:
            if member.isfile():
                yield member.name, tar.extractfile(member)


def _imdb_reviews_splits(self: Any, dl_manager: tfds.download.DownloadManager) -> list:
    # tfds's imdb_reviews split generator (plain_text), with the archive read by _iter_tar.
    path = epath.Path(dl_manager.download(_IMDB_URL))
    splits = (
        ("train", "aclImdb/train", True),
        ("test", "aclImdb/test", True),
        ("unsupervised", "aclImdb/train", False),
    )
    return [
        tfds.core.SplitGenerator(
            name=name,
            gen_kwargs={"archive": _iter_tar(path), "directory": directory, "labeled": labeled},
        )
        for name, directory, labeled in splits
    ]


_TINY_SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
_IMDB_URL = "http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
_OVERRIDES: dict[str, dict[str, Any]] = {
    "tiny_shakespeare": {"_split_generators": _tiny_shakespeare_splits},
    "imdb_reviews": {"_split_generators": _imdb_reviews_splits},
}


def prepare_catalog_dataset(
    name: str, data_dir: str, overrides: Mapping[str, Any] | None = None
) -> tfds.core.DatasetBuilder:
    """Download and write ``name`` as array_record into ``data_dir`` (no-op once prepared);
    returns the builder that reads it. ``overrides`` replace attributes of tfds's builder class
    (default: this module's, for the text datasets) where tfds would need TensorFlow."""
    base = tfds.builder_cls(name)
    builder_cls = type(
        f"TfFree{base.__name__}",
        (tfds_code_path_fix, base),
        # _code_path_of keeps tfds's checksums.tsv for the download; name keeps the folder.
        {
            "name": base.name,
            "_code_path_of": base,
            **(_OVERRIDES.get(name, {}) if overrides is None else overrides),
        },
        skip_registration=True,
    )
    builder = builder_cls(data_dir=data_dir, file_format="array_record")
    try:
        with preparation_lock(data_dir, name):
            builder.download_and_prepare(download_config=NO_GCS)
    except Exception as error:
        raise RuntimeError(
            f"could not prepare the TFDS dataset {name!r} in {data_dir} ({error}). It needs a "
            f"network connection once; or prepare it elsewhere (array_record) and copy "
            f"{os.path.join(data_dir, name)} here."
        ) from error
    return builder


def load_catalog_splits(
    name: str,
    splits: Sequence[str],
    data_dir: str,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Sequence[dict[str, Any]]]:
    """Random-access sources for ``splits`` of a catalog dataset, preparing it if needed
    (``overrides``: see :func:`prepare_catalog_dataset`)."""
    builder = prepare_catalog_dataset(name, data_dir, overrides)
    # Read through the same builder class: tfds's own may need TensorFlow just to build its
    # info (coco_captions).
    sources = builder.as_data_source(split=list(splits))
    return dict(zip(splits, sources, strict=True))


class LmWindows(Sequence[dict[str, np.ndarray]]):
    """Next-token windows over a token stream: window i predicts ``ids[i*T + 1 : i*T + T + 1]``.

    Windows do not overlap, and the last one is padded (weights 0), so the windows score
    every token after the first exactly once. Items: ``inputs``/``targets`` int32 ``[T]``,
    ``weights`` float32 ``[T]``.
    """

    def __init__(self, ids: np.ndarray, seq_len: int):
        self.ids = np.asarray(ids, dtype=np.int32)
        self.seq_len = seq_len

    def __len__(self) -> int:
        return math.ceil(max(len(self.ids) - 1, 0) / self.seq_len)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(f"window {index} out of range for {len(self)} windows")
        start = (index % len(self)) * self.seq_len
        chunk = self.ids[start : start + self.seq_len + 1]
        n = len(chunk) - 1
        inputs = np.zeros(self.seq_len, np.int32)
        targets = np.zeros(self.seq_len, np.int32)
        weights = np.zeros(self.seq_len, np.float32)
        inputs[:n], targets[:n], weights[:n] = chunk[:-1], chunk[1:], 1.0
        return {"inputs": inputs, "targets": targets, "weights": weights}


def byte_ids(texts: Sequence[dict[str, Any]]) -> np.ndarray:
    """The ``text`` of every example, concatenated, as byte-tokenizer ids ``[N]``."""
    data = b"".join(as_bytes(example["text"]) for example in texts)
    return np.frombuffer(data, dtype=np.uint8).astype(np.int32) + NUM_SPECIAL
