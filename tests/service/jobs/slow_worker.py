"""Tests only: ``labelclean worker`` that waits between cleaning each chunk and storing it, so that
a test can stop, kill or outrun it while it holds the chunk. The wait is injected here, by
wrapping ``service.jobs.steps.process_chunk`` in this process: production code reads no test knob.

    python tests/service/jobs/slow_worker.py DELAY_S worker --model BUNDLE [--burst]

(``tests.service.jobs.conftest.Workers.start(delay_s=...)`` runs it.) The worker's heartbeat goes on
while it waits: it is live but slow, as a worker stuck on a hung read would be.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from labelclean.service.jobs import steps as bulk

from labelclean.cli import main


def slow_down(delay_s: float) -> None:
    """Every chunk cleaned by this process waits ``delay_s`` before its results are stored."""
    clean = bulk.process_chunk

    async def process_chunk(*args: Any, **kwargs: Any) -> Any:
        result = await clean(*args, **kwargs)
        await asyncio.sleep(delay_s)  # the event loop runs on: heartbeats, touches
        return result

    bulk.process_chunk = process_chunk


if __name__ == "__main__":
    slow_down(float(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
