"""The FastAPI app of the HTTP process: one router per resource; the lifespan reads the bundle
and starts the inference process (or connects to the shared one), where the model loads.

    app = create_app()                       # settings from LABELCLEAN_* (uvicorn --factory)
    app = create_app(Settings(model=path))   # explicit settings (tests)

Middleware, outermost first: metrics (counts every response), body size limit (413 while the
body streams in). Errors of every kind become the JSON body of service.errors. /docs and
/openapi.json (service.http.docs) serve the contract unless ``settings.docs`` is off.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ... import __version__
from ...settings import Settings, get_settings
from ..errors import install_error_handlers
from . import classify, docs, health, jobs, label_studio, metrics_route, model_info, reload
from .body_limit import BodySizeLimit
from .metrics import Metrics, MetricsMiddleware
from .state import ServiceState

DESCRIPTION = (
    "Find wrong and missing image labels (Veit et al., CVPR 2017): /classify scores images, "
    "/clean gives each noisy label a verdict. Errors are JSON: "
    '{"error": {"code", "message", "field"?, "unknown_labels"?}}.'
)


def log_to_stderr(level: str) -> None:
    """This process's own log lines (``labelclean.*``: which key created or cancelled a job,
    unexpected errors) on stderr at ``level``, shaped like uvicorn's; once per process."""
    logger = logging.getLogger("labelclean")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(level.upper())


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    log_to_stderr(settings.log_level)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The event loop gives up the GIL at every socket call; with the interpreter's default
        # 5 ms interval it then waits behind any busy thread (measured when decoding ran in this
        # process: 15% more requests/s at 0.2 ms, benchmarks/RESULTS.md). The inference process,
        # where the decode and inference threads now run, sets the same interval.
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
        state = ServiceState(settings, metrics)
        app.state.service = state
        try:
            await state.start()
            app.state.jobs.start()  # the jobs' upkeep (service.jobs.upkeep); Redis may be away
            yield
        finally:
            await state.stop()
            await app.state.jobs.close()
            sys.setswitchinterval(switch_interval)

    app = FastAPI(
        title="labelclean",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # /openapi.json serves the contract, openapi.yaml (service.http.docs)
        generate_unique_id_function=lambda route: route.name,  # operationId = function name
    )
    app.state.metrics = metrics
    app.state.settings = settings  # not a dependency override: FastAPI re-inspects those per call
    app.state.jobs = jobs.Jobs(settings)  # Redis and storage; connects on first use
    metrics.watch_jobs(app.state.jobs.store)
    install_error_handlers(app)
    modules = [classify, health, model_info, reload, metrics_route, jobs]  # busy first
    if settings.docs:
        modules.append(docs)
    for module in modules:
        app.include_router(module.router)
    app.state.api_routes = [route for module in modules for route in module.router.routes]
    # Label Studio's ML backend protocol (service.http.label_studio): Label Studio's API, not
    # ours, so not in openapi.yaml.
    app.include_router(label_studio.router, include_in_schema=False)
    app.state.api_routes += label_studio.router.routes
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
