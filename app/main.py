"""The ASGI application: ``app.main:app`` for Gunicorn/Uvicorn, ``create_app()`` for tests.

Importing this module does no I/O: settings are read, logging is configured and the database
engine is built in the lifespan, when the server starts the application, and the engine is
disposed there when it stops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from app import __version__
from app.api.routes import health, metrics, notes
from app.core.config import Settings, SettingsError, get_settings
from app.core.logs import configure_logging, get_logger
from app.db.engine import build_async_engine, build_sessionmaker
from app.db.migrations import expected_head
from app.middleware import RequestContextMiddleware

log = get_logger("app.main")


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """A lost or unreachable database is the service being unavailable, not a bug: 503."""
    log.error("database unavailable", error=repr(exc), path=request.url.path)
    return JSONResponse({"detail": "database unavailable"}, status_code=503)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; ``settings`` default to the environment's, read at startup."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            current = settings if settings is not None else get_settings()
        except SettingsError as exc:
            configure_logging()
            log.critical("cannot start: invalid settings", error=str(exc))
            raise
        configure_logging(current.log_level)
        engine = build_async_engine(current)
        app.state.settings = current
        app.state.engine = engine
        app.state.sessionmaker = build_sessionmaker(engine)
        log.info(
            "startup",
            release=current.app_release,
            version=__version__,
            env=current.app_env,
            schema_head=expected_head(),  # fails fast if the packaged migrations are broken
            metrics_multiprocess=current.prometheus_multiproc_dir is not None,
        )
        try:
            yield
        finally:
            await engine.dispose()
            log.info("shutdown", release=current.app_release)

    application = FastAPI(
        title="fastapi-metal notes",
        version=__version__,
        lifespan=lifespan,
    )
    application.add_middleware(RequestContextMiddleware)
    application.add_exception_handler(OperationalError, _database_unavailable)
    application.include_router(health.router)
    application.include_router(notes.router)
    application.include_router(metrics.router)
    return application


app = create_app()
