"""A TCP proxy that adds a fixed delay to every request, to play a distant S3 in front of moto.

    .venv/bin/python benchmarks/latency_proxy.py --listen 9001 --target 127.0.0.1:9000 --delay-ms 20

Each chunk of bytes from the client is forwarded ``--delay-ms`` after it arrived (in order), so
every HTTP request reaches the server that much later: one round trip of that length per
request, as against a bucket in another zone or region. Responses pass straight back.
``benchmarks/jobs_bench.py --s3-latency-ms D`` starts one and points the workers and the
offline ``labelclean clean`` at it (uploads and checks go to moto directly).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    sender = asyncio.ensure_future(send())
    try:
        while data := await reader.read(1 << 16):
            queue.put_nowait((loop.time() + delay, data))
        queue.put_nowait((0.0, b""))
        await sender
        with contextlib.suppress(OSError, RuntimeError):
            writer.write_eof()
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)


async def main(listen: int, host: str, port: int, delay_ms: float) -> None:
    delay = delay_ms / 1000

    running: set[asyncio.Task] = set()  # asyncio's stream server drops its reference to a
    # handler once the client's connection is lost: keep one, so none is destroyed pending

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        if me is not None:
            running.add(me)
            me.add_done_callback(running.discard)
        try:
            server_r, server_w = await asyncio.open_connection(host, port)
        except OSError:
            client_w.close()
            return
        pumps = [asyncio.ensure_future(pump(client_r, server_w, delay)),
                 asyncio.ensure_future(pump(server_r, client_w, 0.0))]  # fmt: skip
        running.update(pumps)
        for task in pumps:
            task.add_done_callback(running.discard)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for w in (client_w, server_w):
                w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", listen, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", type=int, required=True, help="port on 127.0.0.1")
    p.add_argument("--target", required=True, help="HOST:PORT of the server")
    p.add_argument("--delay-ms", type=float, required=True, help="added to each request")
    a = p.parse_args()
    target_host, _, target_port = a.target.rpartition(":")
    asyncio.run(main(a.listen, target_host, int(target_port), a.delay_ms))
