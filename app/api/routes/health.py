"""Liveness (``/health``) and readiness (``/health/ready``) with a hard time bound.

Both answer within ``HEALTH_DB_TIMEOUT`` seconds plus a little, whatever the database does:
the check runs in its own task, and when the time is up the response goes out at once while
the task is cancelled in the background (``asyncio.wait_for`` would first wait for the
cancellation to finish, which a wedged connection attempt can delay). The connection's own
``connect_timeout`` (``DB_CONNECT_TIMEOUT``) still bounds the abandoned attempt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, status
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.deps import EngineDep, SettingsDep
from app.core.logs import get_logger
from app.db.migrations import expected_head
from app.schemas import HealthOut, ReadinessOut

router = APIRouter(prefix="/health", tags=["health"])
log = get_logger("app.health")

T = TypeVar("T")

_NO_STORE = {"Cache-Control": "no-store"}


def _consume_result(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log "never retrieved"


async def _within(seconds: float, check: Callable[[], Awaitable[T]]) -> T:
    """Run ``check`` and return its result, or raise ``TimeoutError`` after ``seconds``."""

    async def run() -> T:
        return await check()

    task = asyncio.create_task(run())
    try:
        done, _pending = await asyncio.wait({task}, timeout=seconds)
    finally:
        if not task.done():
            task.cancel()
            task.add_done_callback(_consume_result)
    if not done:
        raise TimeoutError(f"no answer from the database within {seconds:g}s")
    return task.result()


def _public_detail(exc: BaseException) -> str:
    """Why the check failed, without hosts, ports or user names (the endpoint may be public)."""
    if isinstance(exc, TimeoutError):
        return str(exc)
    if isinstance(exc, OperationalError):
        return "cannot connect to the database"
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return f"database error ({type(exc.orig).__name__})"
    return f"database check failed ({type(exc).__name__})"


async def _ping(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def _database_revisions(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        present = await connection.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
        if not present:
            return []
        rows = await connection.scalars(text("SELECT version_num FROM alembic_version"))
        return sorted(rows)


@router.get(
    "",
    response_model=HealthOut,
    response_model_exclude_none=True,
    responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"model": HealthOut}},
)
async def health(settings: SettingsDep, engine: EngineDep) -> JSONResponse:
    """200 when ``SELECT 1`` succeeds, else 503; always names the release."""
    try:
        await _within(settings.health_db_timeout, lambda: _ping(engine))
    except Exception as exc:
        log.warning("health check failed", check="database", error=repr(exc))
        body = HealthOut(
            status="degraded",
            database="error",
            release=settings.app_release,
            detail=_public_detail(exc),
        )
        return JSONResponse(
            body.model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE, headers=_NO_STORE
        )
    body = HealthOut(status="healthy", database="ok", release=settings.app_release)
    return JSONResponse(body.model_dump(exclude_none=True), headers=_NO_STORE)


@router.get(
    "/ready",
    response_model=ReadinessOut,
    response_model_exclude_none=True,
    responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"model": ReadinessOut}},
)
async def ready(settings: SettingsDep, engine: EngineDep) -> JSONResponse:
    """200 only when the database answers and its schema is at this release's head."""
    expected = expected_head()
    database = "ok"
    detail: str | None = None
    current: str | None = None
    try:
        revisions = await _within(settings.health_db_timeout, lambda: _database_revisions(engine))
        current = ",".join(revisions) if revisions else None
    except Exception as exc:
        log.warning("readiness check failed", check="database", error=repr(exc))
        database, detail = "error", _public_detail(exc)
    if database == "ok" and current != expected:
        detail = f"database schema is at {current or 'no revision'}, this release needs {expected}"
    is_ready = database == "ok" and current == expected
    body = ReadinessOut(
        status="ready" if is_ready else "not_ready",
        database=database,
        release=settings.app_release,
        database_revision=current,
        expected_revision=expected,
        detail=detail,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True) | {"database_revision": current},
        status_code=status.HTTP_200_OK if is_ready else status.HTTP_503_SERVICE_UNAVAILABLE,
        headers=_NO_STORE,
    )
