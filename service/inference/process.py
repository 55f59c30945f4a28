"""The inference process: what the HTTP process hands its images to, as Triton's front end hands
requests to its backends and BentoML's API server to its runners.

    python -m labelclean.service.inference.process FD   # one HTTP process (started by client.py)
    python -m labelclean.service.inference.process --listen SOCKET --lifeline FD
                                                  # every worker of `serve --workers N`
                                                  # (started by shared_inference)

Never started by hand. With FD it serves the one HTTP process at the other end of that
socketpair and exits when it closes. With --listen it serves every HTTP worker that connects to
the unix socket SOCKET, so N workers share one model and one dynamic batcher (one model copy per
host or GPU, batches gathered across workers), and it exits when the lifeline FD (a socket whose
other end ``serve`` holds) closes. Settings come from the LABELCLEAN_* environment. Messages
(service.inference.channel frames):

    in:  ("classify", id, images, filenames, {"threshold", "top_k"})
         ("clean", id, images, filenames, {"labels", "threshold", "min_precision"})
         ("review", id, images, filenames, {"labels"})     Label Studio's /predict
         ("reload", id, [], [], {})                 POST /model/reload: LABELCLEAN_MODEL again
    out: ("reply", id, body)  ("error", id, exception)           per request, to its sender
         ("state", ready, reason, providers)                    after loading, and on connect
         ("model", path, sha256)        the bundle that answers: after a load or reload, on connect
         ("batch", size, queue_waits, inference_s)              per model run, to one of them

Errors the client caused (bad labels, a corrupt image, a full queue) travel back as the
exception itself, for the HTTP process's one error mapping; anything else is logged here with
its traceback and travels as a plain RuntimeError (a 500 without details). It runs in its own
session (Ctrl-C at the terminal goes to the HTTP process only).

SIGHUP (which ``serve`` passes on: service.http.server) reloads LABELCLEAN_MODEL as a "reload"
message does, and tells every HTTP process of a new bundle; with no one to answer, the log says
what happened. One that comes while the model first loads is ignored (that load reads
LABELCLEAN_MODEL anyway).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from ...model.labels import InputError
from ...model.preprocess import ImageError
from ...settings import Settings
from ..errors import ApiError
from .batcher import BatchObserver
from .channel import FrameChannel
from .engine import Engine

log = logging.getLogger("labelclean.service")
EXPECTED = (InputError, ImageError, ApiError)


class _Reporter(BatchObserver):
    """Batches go to one HTTP process, the longest connected: the workers of ``serve
    --workers N`` pool their metrics, so each batch is counted once."""

    def __init__(self, channels: dict[FrameChannel, None]) -> None:
        self.channels = channels  # an ordered set: oldest connection first

    def batch(self, size: int, queue_waits: list[float], inference_s: float) -> None:
        oldest = next(iter(self.channels), None)
        if oldest is not None:
            oldest.send(("batch", size, queue_waits, inference_s))


class InferenceServer:
    """The engine and the HTTP processes connected to it."""

    def __init__(self, settings: Settings) -> None:
        self.channels: dict[FrameChannel, None] = {}
        self.engine = Engine(settings, _Reporter(self.channels))
        self.state: tuple[Any, ...] | None = None  # the "state" message, once loaded
        self.model: tuple[Any, ...] | None = None  # the "model" message, once loaded
        self._tasks: set[asyncio.Task[None]] = set()

    def channel(self, on_closed: Any = None) -> FrameChannel:
        """A channel for one more HTTP process (a protocol factory for asyncio)."""

        def on_message(message: Any) -> None:
            answer = self._reload if message[0] == "reload" else _answer
            task = asyncio.get_running_loop().create_task(answer(self.engine, channel, message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        def on_connected() -> None:
            self.channels[channel] = None
            if self.state is not None:
                channel.send(self.state)
            if self.model is not None:
                channel.send(self.model)

        def closed(exc: Exception | None) -> None:
            self.channels.pop(channel, None)
            if on_closed is not None:
                on_closed(exc)

        channel = FrameChannel(on_message, closed, on_connected)
        return channel

    async def load(self) -> None:
        await self.engine.load()
        self.state = ("state", self.engine.ready, self.engine.reason, self.engine.providers)
        if self.engine.ready and self.engine.bundle is not None:
            self.model = ("model", str(self.engine.bundle.path), self.engine.bundle.sha256)
        for channel in self.channels:
            channel.send(self.state)
            if self.model is not None:
                channel.send(self.model)

    async def _reloaded(self) -> dict[str, Any]:
        """Reload the engine (raises what it raises); on a new bundle every HTTP process hears
        of it (and of the state, which a failed first load may have left not ready)."""
        done = await self.engine.reload()
        if done["changed"]:
            e = self.engine
            self.state = ("state", e.ready, e.reason, e.providers)
            self.model = ("model", done["path"], done["sha256"])
            for each in self.channels:
                each.send(self.state)
                each.send(self.model)
        return done

    async def _reload(
        self, engine: Engine, channel: FrameChannel, message: tuple[Any, ...]
    ) -> None:
        """A reload asked by one HTTP process: the others hear of the new bundle before the
        asker's reply."""
        request_id = message[1]
        try:
            done = await self._reloaded()
        except EXPECTED as exc:
            channel.send(("error", request_id, exc))
            return
        except Exception:  # noqa: BLE001
            log.exception("reload failed")
            channel.send(
                ("error", request_id, RuntimeError("internal error in the inference process"))
            )
            return
        channel.send(("reply", request_id, json.dumps(done).encode()))

    def reload_on_signal(self) -> None:
        """SIGHUP: reload as a "reload" message does; the log line is the answer."""
        log.info("SIGHUP: loading the bundle at %s", self.engine.settings.model)
        task = asyncio.get_running_loop().create_task(self._reload_on_signal())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reload_on_signal(self) -> None:
        try:
            done = await self._reloaded()
        except EXPECTED as exc:
            log.error("SIGHUP: %s; the model in service goes on serving", exc)
        except Exception:  # noqa: BLE001
            log.exception("SIGHUP: reload failed; the model in service goes on serving")
        else:
            what = "now serving" if done["changed"] else "already serving, nothing changed:"
            log.info("SIGHUP: %s %s (sha256 %s)", what, done["path"], done["sha256"][:12])

    def on_hangup(self) -> None:
        """Reload on SIGHUP from now on (once the first load is done)."""
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload_on_signal)

    async def stop(self) -> None:
        for channel in list(self.channels):
            channel.close()
        for task in self._tasks:
            task.cancel()
        await self.engine.stop()


async def serve(sock: socket.socket, settings: Settings) -> None:
    """Serve the one HTTP process at the other end of ``sock`` until it closes."""
    loop = asyncio.get_running_loop()
    server = InferenceServer(settings)
    closed: asyncio.Future[None] = loop.create_future()
    channel = server.channel(on_closed=lambda _: closed.done() or closed.set_result(None))
    await loop.connect_accepted_socket(lambda: channel, sock)
    await server.load()
    server.on_hangup()
    await closed
    await server.stop()


async def serve_shared(path: Path, lifeline: socket.socket, settings: Settings) -> None:
    """Serve every HTTP process that connects to the unix socket ``path`` until ``lifeline``
    closes (the ``serve`` process ended or let go of it)."""
    loop = asyncio.get_running_loop()
    server = InferenceServer(settings)
    closed: asyncio.Future[None] = loop.create_future()
    watcher = FrameChannel(lambda _: None, lambda _: closed.done() or closed.set_result(None))
    await loop.connect_accepted_socket(lambda: watcher, lifeline)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # left by a predecessor that was killed
    listener = await loop.create_unix_server(server.channel, str(path))
    try:
        await server.load()
        server.on_hangup()
        await closed
    finally:
        listener.close()
        await server.stop()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


async def _answer(engine: Engine, channel: FrameChannel, message: tuple[Any, ...]) -> None:
    kind, request_id, images, filenames, fields = message
    try:
        if kind == "classify":
            body = await engine.classify(images, filenames, **fields)
        elif kind == "clean":
            body = await engine.clean(images, filenames, **fields)
        elif kind == "review":
            body = await engine.review(images, filenames, **fields)
        else:
            raise RuntimeError(f"unknown request kind {kind!r}")
    except EXPECTED as exc:
        channel.send(("error", request_id, exc))
    except Exception:  # noqa: BLE001 - the HTTP process answers 500, the details stay here
        log.exception("%s request failed", kind)
        channel.send(("error", request_id, RuntimeError("internal error in the inference process")))
    else:
        channel.send(("reply", request_id, body))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m labelclean.service.inference.process")
    parser.add_argument("fd", nargs="?", type=int, help="socketpair end of the one HTTP process")
    parser.add_argument("--listen", type=Path, help="unix socket that HTTP workers connect to")
    parser.add_argument("--lifeline", type=int, help="with --listen: exit when this fd closes")
    args = parser.parse_args(argv)
    if (args.fd is None) == (args.listen is None) or (args.listen and args.lifeline is None):
        parser.error("give either FD, or --listen SOCKET --lifeline FD")
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the model is first loaded
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(levelname)s:     [inference {os.getpid()}] %(message)s",
    )
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
    try:
        import uvloop  # uvicorn[standard] brings it; plain asyncio works too
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    if args.listen is not None:
        runner(serve_shared(args.listen, socket.socket(fileno=args.lifeline), settings))
    else:
        runner(serve(socket.socket(fileno=args.fd), settings))


if __name__ == "__main__":
    main()
