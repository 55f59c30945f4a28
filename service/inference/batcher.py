"""Dynamic batching, as Triton's dynamic batcher does it: images from concurrent requests are
gathered into one model run.

    batcher = DynamicBatcher(model.run, max_batch_size=32, max_queue_delay_s=0.005)
    batcher.start()
    async with batcher.expect(n) as predict:      # n images about to be decoded
        scores, cleaned, issue = await predict(images, noisy)  # (n, C, H, W), (n, d) -> (n, d) x3

A batch leaves when it is full, when its oldest image has waited ``max_queue_delay_s``, or at
once when no other request is on its way (``expect`` counts images still being decoded), so a
lone request never waits for company. Inference runs on one worker thread, off the event loop;
while it runs the next batch gathers.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

import numpy as np

from ..errors import ModelNotReady, Overloaded
from .threads import ThreadPool

Arrays = tuple[np.ndarray, ...]  # the model's outputs: scores, cleaned, issue
RunFn = Callable[[np.ndarray, np.ndarray], Arrays]


@dataclass
class _Item:
    image: np.ndarray  # (C, H, W) float32
    noisy: np.ndarray  # (d,) float32
    future: asyncio.Future[tuple[np.ndarray, np.ndarray]]
    enqueued: float  # loop.time()


class BatchObserver:
    """Hooks for metrics; the default records nothing."""

    def batch(self, size: int, queue_waits: list[float], inference_s: float) -> None:
        pass


class DynamicBatcher:
    def __init__(
        self,
        run: RunFn,
        *,
        max_batch_size: int,
        max_queue_delay_s: float,
        max_queue_images: int = 1 << 30,
        observer: BatchObserver | None = None,
    ) -> None:
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.max_queue_images = max_queue_images
        self._observer = observer or BatchObserver()
        self._queue: deque[_Item] = deque()
        self._expected = 0  # images admitted by expect() and not yet queued
        self._wake = asyncio.Event()
        self._pool = ThreadPool(1, "inference")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def stop(self) -> None:
        """Stop gathering; images still queued fail with ModelNotReady."""
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(ModelNotReady("the server is shutting down"))
        self._pool.shutdown()

    @property
    def pending(self) -> int:
        """Images queued or being decoded."""
        return len(self._queue) + self._expected

    @asynccontextmanager
    async def expect(self, n: int) -> AsyncIterator[Callable[..., object]]:
        """Admit ``n`` images (503 Overloaded past ``max_queue_images``); yield their predict."""
        if self.pending + n > self.max_queue_images:
            raise Overloaded(
                f"{self.pending} images are already waiting (limit {self.max_queue_images}); "
                "retry later"
            )
        left = [n]
        self._expected += n

        async def predict(images: np.ndarray, noisy: np.ndarray) -> Arrays:
            taken = min(left[0], len(images))
            left[0] -= taken
            self._expected -= taken
            return await self.predict(images, noisy)

        try:
            yield predict
        finally:
            self._expected -= left[0]  # images that failed to decode will never come
            self._poke()

    async def predict(self, images: np.ndarray, noisy: np.ndarray) -> Arrays:
        """(N, C, H, W), (N, d) -> the model's outputs, each (N, d); batched with other callers."""
        if self._task is None or self._task.done():
            raise ModelNotReady("the batcher is not running")
        loop = asyncio.get_running_loop()
        now = loop.time()
        futures = []
        first = not self._queue
        for image, labels in zip(images, noisy, strict=True):
            future: asyncio.Future[Arrays] = loop.create_future()
            self._queue.append(_Item(image, labels, future, now))
            futures.append(future)
        self._poke(first)
        if len(futures) == 1:
            return tuple(output[None] for output in await futures[0])
        results = await asyncio.gather(*futures)
        return tuple(np.stack(outputs) for outputs in zip(*results, strict=True))

    def _poke(self, first: bool = False) -> None:
        """Wake the gatherer, but only when what it waits for may have happened: the first
        images, a full batch, or no more on their way (about one wake per batch, not per image)."""
        if not self._wake.is_set() and (
            first or len(self._queue) >= self.max_batch_size or self._expected <= 0
        ):
            self._wake.set()

    async def _gather(self) -> list[_Item]:
        """Wait for the first image, then for more until full, late, or none is coming."""
        loop = asyncio.get_running_loop()
        while not self._queue:
            self._wake.clear()
            await self._wake.wait()
        deadline = self._queue[0].enqueued + self.max_queue_delay_s
        while len(self._queue) < self.max_batch_size and self._expected > 0:
            if deadline <= loop.time():
                break
            self._wake.clear()
            timer = loop.call_at(deadline, self._wake.set)  # cheaper than wait_for's task
            await self._wake.wait()
            timer.cancel()
        n = min(self.max_batch_size, len(self._queue))
        return [self._queue.popleft() for _ in range(n)]

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            batch = [item for item in batch if not item.future.done()]  # callers gone
            if not batch:
                continue
            started = loop.time()
            try:
                outputs, inference_s = await self._pool.run(self._infer, batch)
            except Exception as exc:  # noqa: BLE001 - every waiting caller gets the error
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            for i, item in enumerate(batch):
                if not item.future.done():
                    item.future.set_result(tuple(output[i] for output in outputs))
            self._observer.batch(len(batch), [started - it.enqueued for it in batch], inference_s)

    def _infer(self, batch: list[_Item]) -> tuple[Arrays, float]:
        images = np.stack([item.image for item in batch])
        noisy = np.stack([item.noisy for item in batch])
        t0 = time.perf_counter()
        result = self._run(images, noisy)
        return result, time.perf_counter() - t0
