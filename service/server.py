"""Running the app under uvicorn: what ``labelclean serve`` calls.

    run_server(Settings(model=Path("demo/run/bundle"), port=8000))

One worker runs the app in this process, with its own inference process. Several run the
``create_app`` factory in uvicorn's worker processes, which read the same settings from the
LABELCLEAN_* variables set here, and all connect to one inference process started here first
(service.shared_inference): one model, one batcher. Their metrics are pooled through
prometheus-client's multiprocess mode, so any worker's /metrics shows the whole server.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import uvicorn

from ..settings import Settings
from .app import create_app
from .shared_inference import SharedInference


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
    options = uvicorn_options(settings)
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **options)
        return
    with (
        SharedInference(settings) as shared,
        tempfile.TemporaryDirectory(prefix="labelclean-metrics-") as metrics_dir,
    ):
        os.environ["LABELCLEAN_INFERENCE_SOCKET"] = str(shared.socket_path)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # read by the workers' imports
        uvicorn.run(
            "labelclean.service.app:create_app", factory=True, workers=settings.workers, **options
        )
