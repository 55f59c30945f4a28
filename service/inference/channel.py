"""Messages between the HTTP process and the inference process: pickled Python values in
length-prefixed frames over one stream socket, both ways: a socketpair, or with ``serve
--workers N`` a unix socket in a directory only this user can open (a peer that can send
frames can run code, as with any pickle; the socket is never on the network).

    channel = FrameChannel(on_message=handle, on_closed=gone)
    await loop.connect_accepted_socket(lambda: channel, sock)
    channel.send(("classify", 7, images, filenames, fields))

Sends made in the same turn of the event loop leave in one write: under load a whole batch of
replies (or of requests) costs one system call, not one each.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from collections.abc import Callable
from typing import Any, cast

HEADER = struct.Struct("!I")  # a frame holds one request: bodies are capped at 1 GiB


class FrameChannel(asyncio.Protocol):
    def __init__(
        self,
        on_message: Callable[[Any], None],
        on_closed: Callable[[Exception | None], None],
        on_connected: Callable[[], None] | None = None,
    ) -> None:
        self._on_message = on_message
        self._on_closed = on_closed
        self._on_connected = on_connected
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._outgoing: list[bytes] = []
        self.closed = False

    # ---------------------------------------------------------------- sending

    def send(self, message: Any) -> None:
        """Queue ``message``; it leaves with the others of this loop turn. Silently dropped
        once the channel is closed (whoever waits for a reply learns of it from on_closed)."""
        if self.closed or self._transport is None:
            return
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outgoing += (HEADER.pack(len(data)), data)

    def _flush(self) -> None:
        if self._transport is not None and not self.closed and self._outgoing:
            self._transport.writelines(self._outgoing)
        self._outgoing = []

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._flush()
            self._transport.close()

    # ---------------------------------------------------------------- protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if self._on_connected is not None:
            self._on_connected()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        while len(buffer) - start >= HEADER.size:
            (size,) = HEADER.unpack_from(buffer, start)
            end = start + HEADER.size + size
            if len(buffer) < end:
                break
            message = pickle.loads(memoryview(buffer)[start + HEADER.size : end])
            start = end
            self._on_message(message)
        del buffer[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._outgoing = []
        self._on_closed(exc)
