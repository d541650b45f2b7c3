"""Engines for the service (async) and the migrations (sync), both on psycopg 3."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from app.core.config import Settings


def _connect_args(settings: Settings, application_name: str) -> dict[str, object]:
    # connect_timeout bounds the whole connection attempt (TCP, TLS, authentication), so a
    # blackholed or wedged database fails the request instead of hanging it.
    return {"connect_timeout": settings.db_connect_timeout, "application_name": application_name}


def build_async_engine(settings: Settings) -> AsyncEngine:
    return create_async_engine(
        settings.database_url,
        pool_pre_ping=True,  # a connection broken by a database restart is replaced, not used
        hide_parameters=True,  # request data stays out of error messages and logs
        pool_size=5,
        max_overflow=10,
        pool_timeout=10,
        pool_recycle=1800,
        connect_args=_connect_args(settings, f"fastapi-metal {settings.app_release}"),
    )


def build_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def build_sync_engine(settings: Settings) -> Engine:
    """A short-lived engine for migrations and the ``app-migrate`` CLI (no pooling needed)."""
    return create_engine(
        settings.database_url,
        poolclass=NullPool,
        hide_parameters=True,
        connect_args=_connect_args(settings, f"app-migrate {settings.app_release}"),
    )
