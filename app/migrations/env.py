"""Alembic environment: the URL comes from the service's Settings, never from alembic.ini.

Online migrations hold a PostgreSQL session advisory lock for their whole run, so two deploys
that migrate at the same moment run one after the other; the second one then finds nothing to
do. The revisions found before and after, read while the lock is held, are left in
``config.attributes`` for ``app-migrate`` to report. ``app-migrate`` passes its ``Settings`` in
``config.attributes["settings"]``; plain ``alembic`` reads them from the environment.
"""

from __future__ import annotations

import logging
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from app.core.config import Settings, get_settings
from app.db.engine import build_sync_engine
from app.db.migrations import MIGRATION_LOCK_KEY
from app.db.models import Base

config = context.config
log = logging.getLogger("app.migrations")

# Plain `alembic -c app/alembic.ini` gets the ini's logging; app-migrate (or a test) that
# configured logging already keeps its own.
if config.config_file_name is not None and not logging.getLogger().handlers:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _settings() -> Settings:
    settings = config.attributes.get("settings")
    return settings if isinstance(settings, Settings) else get_settings()


def _heads() -> list[str]:
    return sorted(context.get_context().get_current_heads())


def run_migrations_offline() -> None:
    """``--sql`` mode: print the SQL instead of running it (no lock: nothing is executed)."""
    context.configure(
        url=_settings().database_url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = build_sync_engine(_settings())
    try:
        with engine.connect() as connection:
            _migrate_locked(connection)
    finally:
        engine.dispose()


def _migrate_locked(connection: Connection) -> None:
    got_it = connection.execute(
        text("SELECT pg_try_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
    ).scalar_one()
    if not got_it:
        log.info(
            "waiting for the migration lock held by another session (key=%d)", MIGRATION_LOCK_KEY
        )
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    # End the implicit transaction the lock query began, so that Alembic's own transaction
    # is a real one (a session-level advisory lock outlives transactions).
    connection.commit()
    log.info("migration lock acquired (key=%d)", MIGRATION_LOCK_KEY)
    try:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            compare_type=True,
        )
        config.attributes["revision_before"] = _heads()
        with context.begin_transaction():
            context.run_migrations()
        config.attributes["revision_after"] = _heads()
    finally:
        try:
            if connection.in_transaction():
                connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()
            log.info("migration lock released")
        except SQLAlchemyError:
            # A broken connection must not hide the error that broke it; the lock ends with
            # the session, which closes right after.
            log.warning("could not release the migration lock; it ends with the session")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
