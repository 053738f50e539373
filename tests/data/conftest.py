"""Tiny sizes for every generated dataset, and one generated copy per test session."""

from __future__ import annotations

import pytest

import attn.data

# Small enough to generate in well under a second each.
TINY = {
    "reverse": {"length": 7, "num_symbols": 5},
    "copy": {"length": 7, "num_symbols": 5},
    "sort": {"length": 7, "num_symbols": 5},
    "mqar": {"seq_len": 32, "num_kv_pairs": (2, 6), "vocab_size": 64},
    "dates": {},
    "listops": {"max_depth": 5, "max_args": 4, "min_length": 8, "max_length": 48},
}
SIZES = {"num_train": 60, "num_validation": 9, "num_test": 23}


def tiny_config(name: str, data_dir, **overrides) -> dict:
    """A get_task config of a tiny ``name`` in ``data_dir``."""
    return {"name": name, "data_dir": str(data_dir), "batch_size": 8, **SIZES, **TINY[name]} | (
        overrides
    )


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory) -> str:
    """A data_dir reused by the tests of one worker: each tiny dataset is generated once."""
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def tiny_task(shared_data_dir):
    """``tiny_task(name, **overrides)`` -> Task, generated in the shared data_dir."""

    def make(name: str, **overrides) -> attn.data.Task:
        return attn.data.get_task(tiny_config(name, shared_data_dir, **overrides))

    return make
