"""Generated builders: deterministic bytes, folders named by size, reuse, config checks."""

from __future__ import annotations

import concurrent.futures
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

import attn.data
from attn.data import mqar, sequence_tasks
from attn.data.builder import SPLITS

from .conftest import TINY, tiny_config


def _records(task: attn.data.Task) -> dict[str, list[dict]]:
    return {split: [source[i] for i in range(len(source))] for split, source in task.splits.items()}


def _assert_same_records(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for split in a:
        assert len(a[split]) == len(b[split])
        for x, y in zip(a[split], b[split], strict=True):
            assert x.keys() == y.keys()
            for key in x:
                np.testing.assert_array_equal(np.asarray(x[key]), np.asarray(y[key]), err_msg=key)


def _record_files(root: pathlib.Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*.array_record-*"))
    }


@pytest.mark.parametrize("name", sorted(TINY))
def test_two_independent_generations_are_identical(tmp_path, name):
    first = attn.data.get_task(tiny_config(name, tmp_path / "a"))
    second = attn.data.get_task(tiny_config(name, tmp_path / "b"))
    records = _records(first)
    _assert_same_records(records, _records(second))
    assert {split: len(records[split]) for split in SPLITS} == {
        "train": 60,
        "validation": 9,
        "test": 23,
    }
    files_a, files_b = _record_files(tmp_path / "a"), _record_files(tmp_path / "b")
    assert len(files_a) == 3 and files_a == files_b  # same bytes on disk


def test_data_seed_changes_the_data(tmp_path):
    a = _records(attn.data.get_task(tiny_config("reverse", tmp_path)))
    b = _records(attn.data.get_task(tiny_config("reverse", tmp_path, data_seed=1)))
    assert not np.array_equal(a["train"][0]["inputs"], b["train"][0]["inputs"])


def test_generated_once_then_reused(tmp_path, monkeypatch):
    first = attn.data.get_task(tiny_config("sort", tmp_path))

    def fail(self, split):
        raise AssertionError("regenerated")

    monkeypatch.setattr(sequence_tasks.AttnSort, "generate", fail)
    again = attn.data.get_task(tiny_config("sort", tmp_path))
    _assert_same_records(_records(first), _records(again))
    with pytest.raises(AssertionError, match="regenerated"):  # a new size is generated
        attn.data.get_task(tiny_config("sort", tmp_path, length=5))


def test_folders_are_named_by_size_and_readable_with_tfds(tmp_path):
    attn.data.get_task(tiny_config("mqar", tmp_path))
    config = mqar.MqarConfig(
        **{
            k: v
            for k, v in tiny_config("mqar", tmp_path).items()
            if k not in ("name", "data_dir", "batch_size")
        }
    )
    assert "seq_len32" in config.name and "kv_pairs2-6" in config.name
    assert (tmp_path / "attn_mqar" / config.name / "1.0.0").is_dir()
    # Plain tfds, without attn.data.get_task, reads the same records.
    source = tfds.data_source(
        "attn_mqar",
        split="test",
        data_dir=str(tmp_path),
        download=False,
        builder_kwargs={"config": config, "file_format": "array_record"},
    )
    assert len(source) == 23 and source[0]["inputs"].shape == (32,)


def test_default_config_name_reaches_the_registered_config(tmp_path):
    # Default sizes used to collide with BUILDER_CONFIGS (tfds compares by identity).
    config = sequence_tasks.SequenceConfig()
    assert config.name == sequence_tasks.AttnReverse.BUILDER_CONFIGS[0].name
    assert config.name == "train50000_val1000_test10000_seed0_length16_symbols10"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (lambda: sequence_tasks.SequenceConfig(length=0), "length"),
        (lambda: sequence_tasks.SequenceConfig(num_symbols=300), "num_symbols"),
        (lambda: sequence_tasks.SequenceConfig(num_train=-1), "num_train"),
        (
            lambda: sequence_tasks.SequenceConfig(num_validation=0),
            "num_validation must be an int >= 1",
        ),
        (lambda: mqar.MqarConfig(seq_len=16, num_kv_pairs=8), "too short"),
        (lambda: mqar.MqarConfig(num_kv_pairs=(5, 3)), "num_kv_pairs"),
    ],
)
def test_bad_sizes_are_rejected(config, message):
    with pytest.raises(ValueError, match=message):
        config()


def test_concurrent_first_use_generates_once(tmp_path):
    # Sweep runs starting together: without the preparation lock, all but one failed
    # with FileExistsError when tfds renamed its temporary folder into place. Threads
    # stand in for processes: each flock() call opens its own file, so they exclude
    # each other the same way (and fork would be unsafe after jax and tfds start threads).
    def first_inputs() -> list[int]:
        task = attn.data.get_task(tiny_config("mqar", tmp_path))
        return task.example("train", 0)["inputs"].tolist()

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = [future.result() for future in [pool.submit(first_inputs) for _ in range(3)]]
    assert results[0] == results[1] == results[2]
