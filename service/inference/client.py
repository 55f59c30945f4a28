"""The HTTP process's side of the inference process: starts it (or connects to a shared one),
sends it requests, keeps it running.

    client = BackendClient(settings, on_state=..., on_batch=...)
    await client.start()
    body = await client.request("classify", images, filenames, {"threshold": None, "top_k": 5})
    await client.stop()

``on_state(ready, reason, providers)`` is called when the inference process reports its model
loaded (or not), and with ready=False when it dies; it is then restarted (after 1 s, doubling
up to 30 s while it keeps dying), and requests in flight fail with 503 model_not_ready.
``on_model(path, sha256)`` is called when it says which bundle answers (once loaded, and after
POST /model/reload loaded another).

With ``settings.inference_socket`` (the workers of ``serve --workers N``) it starts nothing: it
connects to the shared inference process that ``serve`` runs (service.inference.shared), and
when that goes away it reports not-ready and reconnects (every 0.1 s, backing off to 2 s) while
``serve`` restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ...settings import Settings
from ..errors import ModelNotReady
from .channel import FrameChannel

log = logging.getLogger("labelclean.service")
StateFn = Callable[[bool, str, list[str]], None]
BatchFn = Callable[[int, list[float], float], None]
ModelFn = Callable[[str, str], None]
RESTART_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
RECONNECT_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)


def backoff(delays: Sequence[float], attempt: int) -> float:
    """The wait before retry number ``attempt`` (0-based): the last delay once they run out."""
    return delays[min(attempt, len(delays) - 1)]


def inference_process(settings: Settings, *args: str) -> tuple[list[str], dict[str, str]]:
    """Command line and environment of an inference process (service.inference.process
    ``args``): the settings as LABELCLEAN_* variables, less what only the HTTP side uses."""
    env = {**os.environ, **settings.env()}
    for http_only in ("LABELCLEAN_API_KEYS", "LABELCLEAN_ADMIN_KEYS"):
        env.pop(http_only, None)  # the inference process serves no HTTP
    env.pop("LABELCLEAN_INFERENCE_SOCKET", None)  # it is the inference process
    return [sys.executable, "-m", "labelclean.service.inference.process", *args], env


class BackendClient:
    def __init__(
        self, settings: Settings, *, on_state: StateFn, on_batch: BatchFn,
        on_model: ModelFn | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self._on_state = on_state
        self._on_model = on_model
        self._on_batch = on_batch
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._next_id = 0
        self._channel: FrameChannel | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._failures = 0  # deaths since the model was last ready
        self._lost: asyncio.Future[None] | None = None  # connect mode: the connection ended

    async def start(self) -> None:
        if self.settings.inference_socket is not None:
            watch = self._stay_connected(self.settings.inference_socket)
        else:
            await self._spawn()
            watch = self._supervise()
        self._supervisor = asyncio.get_running_loop().create_task(watch, name="inference-process")

    async def _stay_connected(self, path: Path) -> None:
        """Connect to the shared inference process; when it goes, say so and reconnect."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while not self._stopping:
            lost: asyncio.Future[None] = loop.create_future()
            self._lost = lost  # resolved by _on_closed
            channel = FrameChannel(self._on_message, self._on_closed, self._on_connected)
            try:
                await loop.create_unix_connection(lambda c=channel: c, str(path))
            except OSError as exc:
                delay = backoff(RECONNECT_DELAYS, attempt)
                attempt += 1
                self._on_state(False, f"waiting for the inference process at {path} "
                               f"({exc.strerror or exc}); retrying in {delay:g} s", [])  # fmt: skip
                await asyncio.sleep(delay)
                continue
            attempt = 0
            self._channel = channel
            await lost
            if not self._stopping:
                log.error("the shared inference process went away; reconnecting")
                self._on_state(False, "the inference process went away; reconnecting", [])

    async def _spawn(self) -> None:
        ours, theirs = socket.socketpair()
        argv, env = inference_process(self.settings, str(theirs.fileno()))
        try:
            self._process = await asyncio.create_subprocess_exec(
                *argv, pass_fds=(theirs.fileno(),), env=env, start_new_session=True
            )
        finally:
            theirs.close()
        channel = FrameChannel(self._on_message, self._on_closed)
        await asyncio.get_running_loop().connect_accepted_socket(lambda: channel, ours)
        self._channel = channel

    def forward_signal(self, sig: int) -> bool:
        """Send ``sig`` to the inference process this client started (one system call: safe in
        a signal handler); False when there is none (a shared one, or it is restarting)."""
        process = self._process
        if process is None or process.returncode is not None:
            return False
        try:
            os.kill(process.pid, sig)
        except ProcessLookupError:
            return False
        return True

    async def _supervise(self) -> None:
        while True:
            assert self._process is not None
            code = await self._process.wait()
            if self._stopping:
                return
            delay = backoff(RESTART_DELAYS, self._failures)
            self._failures += 1
            reason = f"the inference process exited (code {code}); restarting in {delay:g} s"
            log.error("%s", reason)
            self._on_state(False, reason, [])
            await asyncio.sleep(delay)
            if self._stopping:
                return
            await self._spawn()

    async def request(
        self, kind: str, images: Sequence[bytes], filenames: Sequence[str | None],
        fields: dict[str, Any],
    ) -> bytes:  # fmt: skip
        """The response body for one /classify or /clean request; raises what the inference
        process raised (InputError, ImageError, ApiError) or ModelNotReady when it is gone."""
        channel = self._channel
        if channel is None or channel.closed:
            raise ModelNotReady("model not ready: the inference process is not running")
        self._next_id += 1
        request_id = self._next_id
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        channel.send((kind, request_id, images, filenames, fields))
        try:
            return await future
        finally:
            self._pending.pop(request_id, None)

    def _on_message(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "reply" or kind == "error":
            future = self._pending.get(message[1])
            if future is None or future.done():
                return  # the caller went away
            if kind == "reply":
                future.set_result(message[2])
            else:
                future.set_exception(message[2])
        elif kind == "batch":
            self._on_batch(*message[1:])
        elif kind == "state":
            if message[1]:
                self._failures = 0
            self._on_state(*message[1:])
        elif kind == "model" and self._on_model is not None:
            self._on_model(*message[1:])

    def _on_connected(self) -> None:
        """Connect mode: before anything it sends; its state comes once its model is loaded."""
        self._on_state(False, "the model is loading in the inference process", [])

    def _on_closed(self, _: Exception | None) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        error = ModelNotReady("the inference process stopped while answering; retry")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()

    async def stop(self, timeout: float = 10.0) -> None:
        """Close the socket (the inference process exits on it), wait, kill if it hangs."""
        self._stopping = True
        if self._channel is not None:
            self._channel.close()
        if self._process is not None and self._process.returncode is None:
            try:
                await asyncio.wait_for(self._process.wait(), timeout)
            except TimeoutError:
                log.warning("the inference process did not exit in %g s: killing it", timeout)
                with contextlib.suppress(ProcessLookupError):
                    self._process.kill()
                await self._process.wait()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
