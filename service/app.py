"""The HTTP service: serves what the pipeline published (policy, champion model); never trains.

    from service.app import create_app, serve
    serve(host="0.0.0.0", port=8000, published_dir="published")   # what `autoaug serve` calls
    uvicorn service.app:create_app --factory --workers 2          # the same, settings from AUTOAUG_*

Routers per resource (``service/routers``), dependencies as Annotated aliases (``service/deps``),
settings from ``AUTOAUG_*`` environment variables (``service/settings``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from service.errors import install_error_handlers
from service.head import HeadAsGet
from service.limits import BodySizeLimit
from service.openapi import finish_openapi
from service.published import BrokenPublishError, NotPublishedError, Published
from service.routers import augment, health, models, pages, policies, predict
from service.settings import Settings, load_settings

log = logging.getLogger("autoaug.service")

DESCRIPTION = """Serves what autoaug's `publish` stage wrote: the current augmentation policy
(pollable with ETag / If-None-Match), the champion model (metadata, weights, predictions) and
their history. A new publish is picked up without a restart. Errors are `{"detail": "<one line>"}`."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """The FastAPI app over ``settings.published_dir`` (settings default: the environment)."""
    settings = settings or Settings()
    published = Published(settings.published_dir, settings.torch_device(), settings.autocast_dtype())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _share_cores(settings.workers)
        _warm_up(published)
        yield

    app = FastAPI(
        title="autoaug",
        summary="Augmentation policies and image classifiers found by autoaug",
        description=DESCRIPTION,
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.published = published
    for module in (health, policies, models, predict, augment, pages):
        app.include_router(module.router)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(HeadAsGet)  # added last: the outermost, so HEAD reaches everything as GET
    finish_openapi(app, settings)
    return app


def _share_cores(workers: int) -> None:
    """With several worker processes, each gets its share of the cores for torch: N processes
    each running as many threads as there are cores would fight over them (OpenMP spins)."""
    if workers <= 1:
        return
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // workers))


def _warm_up(published: Published) -> None:
    """Load the champion at start-up so the first prediction is not slow (and log what is served)."""
    try:
        snapshot = published.snapshot()
        record = snapshot.require_model()
        published.champion(record)
        log.info("serving model v%d and policy v%s from %s", record.version, snapshot.current.policy,
                 published.root)
    except (NotPublishedError, BrokenPublishError) as exc:
        log.warning("%s", exc)


def serve(
    host: str | None = None,
    port: int | None = None,
    published_dir: str | os.PathLike[str] | None = None,
    mlflow_ui_url: str | None = None,
    workers: int | None = None,
) -> None:
    """Run the service on uvicorn until interrupted. An argument left None comes from its
    ``AUTOAUG_*`` environment variable, else the default (127.0.0.1, 8000, ``published``, 1 worker).
    A bad value raises ``ConfigError`` (one line) before anything starts.

    workers > 1: that many processes share the port (uvicorn's supervisor), each building its
    own app from the environment (``create_app`` as a factory), where these settings are put.
    """
    import uvicorn

    settings = load_settings(
        host=host, port=port, published_dir=Path(published_dir) if published_dir is not None else None,
        mlflow_ui_url=mlflow_ui_url, workers=workers,
    )
    if not settings.published_dir.is_dir():
        log.warning("%s does not exist yet: the service answers 503 until publish writes it",
                    settings.published_dir)
    if settings.workers == 1:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)
        return
    os.environ.update(settings.as_environment())  # inherited by the worker processes
    uvicorn.run("service.app:create_app", factory=True, workers=settings.workers, host=settings.host,
                port=settings.port, log_level=settings.log_level)
