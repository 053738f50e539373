"""Task batching: determinism, resume, reshuffled epochs, eval coverage, formats, errors."""

from __future__ import annotations

import collections

import ml_collections
import numpy as np
import pytest

import attn.data

from .conftest import TINY, tiny_config

# kind -> targets shape for batch size B, input length T, target length U
_TARGET_SHAPES = {
    "tag": lambda b, t, u: (b, t),
    "lm": lambda b, t, u: (b, t),
    "seq2seq": lambda b, t, u: (b, u),
    "classify": lambda b, t, u: (b,),
}


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _rows(batch: dict) -> list[tuple]:
    """One hashable identity per example of a batch (its inputs and targets)."""
    return [
        (tuple(x), tuple(np.atleast_1d(y)))
        for x, y in zip(batch["inputs"], batch["targets"], strict=True)
    ]


@pytest.mark.parametrize("name", sorted(TINY))
def test_batch_format(tiny_task, name):
    task = tiny_task(name)
    expected_kind = {"mqar": "lm", "dates": "seq2seq", "listops": "classify"}.get(name, "tag")
    assert task.kind == expected_kind
    b, t, u = 8, task.input_length, task.target_length
    for batch in (task.train_batch(3), next(task.eval_batches("validation"))):
        assert set(batch) == {"inputs", "targets", "weights"}
        assert batch["inputs"].shape == (b, t) and batch["inputs"].dtype == np.int32
        assert batch["targets"].shape == _TARGET_SHAPES[task.kind](b, t, u)
        assert batch["targets"].dtype == np.int32
        assert batch["weights"].shape == batch["targets"].shape
        assert batch["weights"].dtype == np.float32
        assert batch["inputs"].max() < task.input_vocab_size
        assert batch["targets"].max() < task.target_vocab_size
        assert batch["weights"].sum() > 0
        if task.kind != "classify":  # weights are 0 exactly where the target is padding
            assert np.all(batch["weights"][batch["targets"] == 0] == 0)


def test_train_batch_is_a_function_of_seed_and_step(tiny_task):
    task = tiny_task("reverse")
    resumed = tiny_task("reverse")  # a fresh Task, as after a restart
    for step in (17, 0, 5, 17, 123_456):  # any order: random access by step
        assert _equal(task.train_batch(step), resumed.train_batch(step))
    assert not _equal(task.train_batch(0), task.train_batch(1))
    assert not _equal(task.train_batch(0), tiny_task("reverse", seed=1).train_batch(0))


def test_rows_of_a_train_batch_are_those_of_the_whole_batch(tiny_task):
    """What each process of a multi-process run reads: its rows of the global batch."""
    task = tiny_task("reverse")
    whole = task.train_batch(9)
    halves = [task.train_batch(9, rows=slice(0, 4)), task.train_batch(9, rows=slice(4, 8))]
    assert _equal(whole, {k: np.concatenate([h[k] for h in halves]) for k in whole})


def test_resume_sees_the_batches_of_an_uninterrupted_run(tiny_task):
    uninterrupted = [tiny_task("dates").train_batch(step) for step in range(12)]
    first_run = tiny_task("dates")
    before = [first_run.train_batch(step) for step in range(7)]
    after = [tiny_task("dates").train_batch(step) for step in range(7, 12)]
    assert all(_equal(a, b) for a, b in zip(uninterrupted, before + after, strict=True))


def test_every_epoch_is_a_fresh_permutation_of_the_train_split(tiny_task):
    task = tiny_task("reverse", batch_size=6)  # 60 train examples: 10 steps per epoch
    assert task.steps_per_epoch == 10
    everything = collections.Counter(_rows(task._read("train", range(60))))
    epochs = []
    for epoch in range(3):
        rows = []
        for step in range(epoch * 10, (epoch + 1) * 10):
            rows += _rows(task.train_batch(step))
        assert collections.Counter(rows) == everything  # each example exactly once
        epochs.append(rows)
    assert epochs[0] != epochs[1] != epochs[2] and epochs[0] != epochs[2]


@pytest.mark.parametrize("name", ["reverse", "mqar", "dates", "listops"])
def test_eval_covers_every_example_once_in_order(tiny_task, name):
    task = tiny_task(name)
    batches = list(task.eval_batches("test"))
    assert len(batches) == 3  # 23 examples in batches of 8
    every = task._read("test", range(23))
    for key in every:
        got = np.concatenate([batch[key] for batch in batches])
        np.testing.assert_array_equal(got[:23], every[key], err_msg=key)
        assert np.all(got[23:] == 0), key  # the padding rows: pad ids and weights 0
    assert len(list(task.eval_batches("test", max_batches=2))) == 2


def test_eval_batch_size_and_weights_count_real_examples(tiny_task):
    task = tiny_task("listops", eval_batch_size=10)
    batches = list(task.eval_batches("validation"))
    assert [len(b["targets"]) for b in batches] == [10]
    assert batches[0]["weights"].tolist() == [1.0] * 9 + [0.0]


def test_cache_changes_nothing_but_speed(tiny_task):
    cached, lazy = tiny_task("mqar", cache=True), tiny_task("mqar", cache=False)
    for step in (0, 9, 31):
        assert _equal(cached.train_batch(step), lazy.train_batch(step))
    for a, b in zip(cached.eval_batches(), lazy.eval_batches(), strict=True):
        assert _equal(a, b)


def test_tokenizers_decode_batches(tiny_task):
    task = tiny_task("dates")
    example = task.example("test", 0)
    iso = task.target_tokenizer.decode(example["targets"])
    assert len(iso) == 10 and iso[4] == "-" and iso[7] == "-"
    labels = task.tokenizer.token_strings(example["inputs"])
    assert len(labels) == task.input_length and "<pad>" in labels


def test_config_dict_and_catalog_entry_work(shared_data_dir):
    config = ml_collections.ConfigDict(tiny_config("copy", shared_data_dir))
    a = attn.data.get_task(config)
    b = attn.data.DATASETS["copy"](**{k: v for k, v in config.items() if k != "name"})
    assert _equal(a.train_batch(2), b.train_batch(2))
    assert a.config["name"] == "copy" and a.config["data_dir"] == shared_data_dir


def test_tfds_data_dir_environment_variable_is_honoured(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    config = tiny_config("reverse", "unused")
    del config["data_dir"]
    task = attn.data.get_task(config)
    assert task.config["data_dir"] == str(tmp_path)
    assert (tmp_path / "attn_reverse").is_dir()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"name": "revers"}, "unknown dataset 'revers'; valid names: reverse, copy"),
        ({"batch_size": 8}, "unknown dataset None"),
        (
            {"name": "reverse", "lenght": 8},
            r"data.lenght: unknown key for dataset 'reverse'; valid keys:.*length",
        ),
        ({"name": "mqar", "length": 8}, r"data.length: unknown key for dataset 'mqar'.*seq_len"),
        ({"name": "reverse", "length": "8"}, "data.length must be a positive int"),
        ({"name": "reverse", "length": 0}, "data.length must be a positive int"),
        ({"name": "reverse", "batch_size": 0}, "batch_size must be a positive int"),
        ({"name": "reverse", "seed": -1}, "data.seed must be a non-negative int"),
        ({"name": "mqar", "seq_len": 8, "num_kv_pairs": 4}, "too short"),
    ],
)
def test_bad_configs_raise_clear_errors(tmp_path, config, message):
    with pytest.raises(ValueError, match=message):
        attn.data.get_task({"data_dir": str(tmp_path), "num_train": 10, **config})


def test_bad_steps_and_splits_raise(tiny_task):
    task = tiny_task("copy")
    with pytest.raises(ValueError, match="step must be an int >= 0"):
        task.train_batch(-1)
    with pytest.raises(ValueError, match=r"unknown split 'dev'.*'train', 'validation', 'test'"):
        next(task.eval_batches("dev"))
