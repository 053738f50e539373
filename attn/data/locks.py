"""An inter-process lock around dataset preparation.

Runs of a sweep that start together would all prepare the same dataset; tfds writes each
into a temporary folder and renames it, and every rename after the first fails with
FileExistsError. Holding this lock, the first run prepares and the others then find the
data ready.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

try:
    import fcntl
except ImportError:  # Windows: no flock; preparation is then unguarded.
    fcntl = None

__all__ = ["preparation_lock"]


@contextlib.contextmanager
def preparation_lock(data_dir: str, name: str) -> Iterator[None]:
    """Hold an exclusive lock on ``data_dir/.locks/name.lock`` (local data_dirs only)."""
    if fcntl is None or "://" in data_dir:  # e.g. gs:// buckets cannot be flock'ed
        yield
        return
    lock_dir = os.path.join(data_dir, ".locks")
    os.makedirs(lock_dir, exist_ok=True)
    with open(os.path.join(lock_dir, f"{name}.lock"), "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
