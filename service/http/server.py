"""Running the app under uvicorn: what ``labelclean serve`` calls.

    run_server(Settings(model=Path("demo/run/bundle"), port=8000))

One worker runs the app in this process, with its own inference process. Several run the
``create_app`` factory in uvicorn's worker processes, which read the same settings from the
LABELCLEAN_* variables set here, and all connect to one inference process started here first
(service.inference.shared): one model, one batcher. Their metrics are pooled through
prometheus-client's multiprocess mode, so any worker's /metrics shows the whole server.

SIGHUP to this process reloads the bundle at LABELCLEAN_MODEL, as POST /model/reload does: it
is passed on to the inference process (service.inference.process), which logs what happened. With
several workers it replaces uvicorn's own meaning of SIGHUP (restart the workers), which would
leave the model as it was.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess

from ...settings import Settings
from ..inference.shared import SharedInference
from .app import create_app, log_to_stderr

log = logging.getLogger("labelclean.service")


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn settings the service runs with (the benchmark's bare endpoint uses them too)."""
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "server_header": False,
        "timeout_graceful_shutdown": 10,
    }


def run_server(settings: Settings) -> None:
    os.environ.update(settings.env())
    log_to_stderr(settings.log_level)
    options = uvicorn_options(settings)
    if settings.workers == 1:
        app = create_app(settings)

        def pass_on() -> bool:
            state = getattr(app.state, "service", None)  # set once the lifespan starts
            return state is not None and state.backend.forward_signal(signal.SIGHUP)

        signal.signal(signal.SIGHUP, lambda *_: _hangup(pass_on))
        uvicorn.run(app, **options)
        return
    with (
        SharedInference(settings) as shared,
        tempfile.TemporaryDirectory(prefix="labelclean-metrics-") as metrics_dir,
        _supervisor_hangup(lambda: shared.forward_signal(signal.SIGHUP)),
    ):
        os.environ["LABELCLEAN_INFERENCE_SOCKET"] = str(shared.socket_path)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # read by the workers' imports
        uvicorn.run(
            "labelclean.service.http.app:create_app",
            factory=True,
            workers=settings.workers,
            **options,
        )


def _hangup(pass_on: Callable[[], bool]) -> None:
    """SIGHUP: the inference process reloads the model (and logs how it went)."""
    if not pass_on():
        log.warning("SIGHUP: no inference process to reload the model (it is starting); ignored")


@contextlib.contextmanager
def _supervisor_hangup(pass_on: Callable[[], bool]) -> Iterator[None]:
    """uvicorn's worker supervisor answers SIGHUP with ``_hangup`` instead of restarting the
    workers (it queues the signal and calls its ``handle_hup``)."""
    original = Multiprocess.handle_hup
    Multiprocess.handle_hup = lambda self: _hangup(pass_on)  # type: ignore[method-assign]
    try:
        yield
    finally:
        Multiprocess.handle_hup = original  # type: ignore[method-assign]
