"""Ctrl-C as a request to stop training cleanly instead of an exception at a random point."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["TrainingInterrupted", "stop_requests"]


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C after saving a checkpoint (``step``, ``path``).

    A KeyboardInterrupt, so ``except Exception`` lets it through as it would a plain Ctrl-C.
    """

    def __init__(self, message: str, *, step: int, path: object):
        super().__init__(message)
        self.step = step
        self.path = path


@contextlib.contextmanager
def stop_requests() -> Iterator[threading.Event]:
    """An event the first SIGINT (Ctrl-C) sets while the block runs.

    The loop checks it between steps, so the state it then saves is a whole step's. The first
    SIGINT also puts back the previous handler, so a second one raises KeyboardInterrupt at once
    (an orbax save it breaks off leaves only a temporary directory, never a damaged checkpoint).
    Outside the main thread, or where SIGINT is ignored (a shell's background job), nothing is
    installed and the event is never set.
    """
    requested = threading.Event()
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is signal.SIG_IGN:
        yield requested
        return
    if previous is None:  # installed outside Python, cannot be put back: Python's default then
        previous = signal.default_int_handler

    def handler(signum: int, frame: object) -> None:
        requested.set()
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, handler)
    try:
        yield requested
    finally:
        signal.signal(signal.SIGINT, previous)
