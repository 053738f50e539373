"""Generated datasets go to a temporary TFDS_DATA_DIR (inherited by subprocesses too)."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def tfds_data_dir(tmp_path_factory):
    previous = os.environ.get("TFDS_DATA_DIR")
    os.environ["TFDS_DATA_DIR"] = str(tmp_path_factory.mktemp("tfds"))
    yield
    if previous is None:
        os.environ.pop("TFDS_DATA_DIR")
    else:
        os.environ["TFDS_DATA_DIR"] = previous
