"""A small thread pool for asyncio callers: ``await pool.run(fn, *args)``.

Leaner than ``loop.run_in_executor`` with a ThreadPoolExecutor, whose ``submit`` takes a
semaphore and a condition lock on every call: on a busy 2-core server those locks make the
event loop and the workers hand the GIL back and forth for each tiny decode. Here a call is
one put on a C-implemented SimpleQueue, and one call_soon_threadsafe back.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_STOP = object()


class ThreadPool:
    def __init__(self, threads: int, name: str) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on a pool thread; its result or exception comes back here."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((loop, future, fn, args))
        return await future

    def _work(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            loop, future, fn, args = item
            try:
                result, error = fn(*args), None
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting caller
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
                loop.call_soon_threadsafe(_settle, future, result, error)

    def shutdown(self) -> None:
        for _ in self._threads:
            self._queue.put(_STOP)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
