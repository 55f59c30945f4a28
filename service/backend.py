"""The inference process: what the HTTP process hands its images to, as Triton's front end hands
requests to its backends and BentoML's API server to its runners.

    python -m labelclean.service.backend FD     # started by service.backend_client, never by hand

FD is its end of a socketpair (service.channel frames). Settings come from the LABELCLEAN_*
environment the HTTP process passes down. Messages:

    in:  ("classify", id, images, filenames, {"threshold", "top_k"})
         ("clean", id, images, filenames, {"labels", "threshold"})
    out: ("reply", id, body)  ("error", id, exception)                   per request
         ("state", ready, reason, providers)                            after loading
         ("batch", size, queue_waits, inference_s)                      per model run

Errors the client caused (bad labels, a corrupt image, a full queue) travel back as the
exception itself, for the HTTP process's one error mapping; anything else is logged here with
its traceback and travels as a plain RuntimeError (a 500 without details). It runs in its own
session (Ctrl-C at the terminal goes to the HTTP process only) and exits when the HTTP process
closes the socket or dies.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from typing import Any

from ..model.labels import InputError
from ..model.preprocess import ImageError
from ..settings import Settings
from .batcher import BatchObserver
from .channel import FrameChannel
from .engine import Engine
from .errors import ApiError

log = logging.getLogger("labelclean.service")
EXPECTED = (InputError, ImageError, ApiError)


class _Reporter(BatchObserver):
    def __init__(self, channel: FrameChannel) -> None:
        self.channel = channel

    def batch(self, size: int, queue_waits: list[float], inference_s: float) -> None:
        self.channel.send(("batch", size, queue_waits, inference_s))


async def serve(sock: socket.socket, settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    closed: asyncio.Future[None] = loop.create_future()
    tasks: set[asyncio.Task[None]] = set()

    def on_message(message: Any) -> None:
        task = loop.create_task(_answer(engine, channel, message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def on_closed(_: Exception | None) -> None:
        if not closed.done():
            closed.set_result(None)

    channel = FrameChannel(on_message, on_closed)
    engine = Engine(settings, _Reporter(channel))
    await loop.connect_accepted_socket(lambda: channel, sock)
    await engine.load()
    channel.send(("state", engine.ready, engine.reason, engine.providers))
    await closed
    for task in tasks:
        task.cancel()
    await engine.stop()


async def _answer(engine: Engine, channel: FrameChannel, message: tuple[Any, ...]) -> None:
    kind, request_id, images, filenames, fields = message
    try:
        if kind == "classify":
            body = await engine.classify(images, filenames, **fields)
        elif kind == "clean":
            body = await engine.clean(images, filenames, **fields)
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
    argv = sys.argv[1:] if argv is None else argv
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s:     [inference] %(message)s"
    )
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
    sock = socket.socket(fileno=int(argv[0]))
    try:
        import uvloop  # uvicorn[standard] brings it; plain asyncio works too
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    runner(serve(sock, settings))


if __name__ == "__main__":
    main()
