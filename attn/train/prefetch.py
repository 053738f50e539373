"""Build the next items of a sequence in a background thread while the caller works."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

__all__ = ["Prefetcher"]

T = TypeVar("T")
_POLL_SECONDS = 0.1  # how often a blocked producer looks whether it should stop


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetcher(Generic[T]):
    """``produce(i)`` for each ``i`` of ``indices``, in order, built ``depth`` items ahead.

    The training loop uses it to read batch ``i`` and copy it to the devices while the devices
    run step ``i - 1``; the items are exactly those of a plain loop, so resuming stays exact.
    An exception in ``produce`` is raised by the ``next()`` that would have returned its item.
    Use it as a context manager: leaving stops and joins the thread.
    """

    def __init__(self, produce: Callable[[int], T], indices: Iterable[int], *, depth: int = 2):
        self._produce = produce
        self._indices = indices
        self._items: queue.Queue[T | _Failure] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prefetch", daemon=True)
        self._end: BaseException | None = None  # StopIteration or produce's error, once reached

    def __enter__(self) -> Prefetcher[T]:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def __iter__(self) -> Prefetcher[T]:
        return self

    def __next__(self) -> T:
        if self._end is None:
            item = self._items.get()
            if not isinstance(item, _Failure):
                return item
            self._end = item.error
        raise self._end

    def _run(self) -> None:
        try:
            for index in self._indices:
                if not self._put(self._produce(index)):
                    return
        except BaseException as error:  # handed to the consumer, who decides
            self._put(_Failure(error))
        else:
            self._put(_Failure(StopIteration()))

    def _put(self, item: T | _Failure) -> bool:
        """Queue ``item`` unless asked to stop first; False if stopped."""
        while not self._stop.is_set():
            try:
                self._items.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False
