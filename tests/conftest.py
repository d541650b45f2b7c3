"""Fixtures shared by every test suite.

All of them are lazy: PostgreSQL starts only for a test that asks for ``pg_cluster`` (directly
or through ``database_url`` / ``migrated_database_url``), once per session, and is stopped and
removed at the end.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.cli import SERVICE_VARIABLES
from tests.helpers.pg import PgCluster, find_pg_bin, missing_pg_bin_message, start_cluster

REPO_ROOT = Path(__file__).resolve().parent.parent
# Console scripts of the interpreter running the tests (the project's venv).
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def venv_bin() -> Path:
    return VENV_BIN


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A private PostgreSQL 15 cluster on 127.0.0.1:<free port>, for the whole session."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        # A broken setup, not a reason to skip: every database test would pass by not running.
        pytest.fail(missing_pg_bin_message(), pytrace=False)
    cluster = start_cluster(bin_dir)
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg(pg_cluster: PgCluster) -> Iterator[PgCluster]:
    """The session cluster, restarted after the test if the test stopped it."""
    yield pg_cluster
    if not pg_cluster.is_running():
        pg_cluster.start()


@pytest.fixture
def database_url(pg: PgCluster) -> Iterator[str]:
    """A fresh, empty database for this test only, as a ``postgresql://`` URL."""
    name = pg.create_database()
    try:
        yield pg.url(name)
    finally:
        if pg.is_running():
            pg.drop_database(name)


@pytest.fixture(scope="session")
def _migrated_database(pg_cluster: PgCluster) -> str:
    """One database migrated to head for the session (CREATE DATABASE costs ~0.3 s each)."""
    from app.core.config import Settings
    from app.migrate import migrate

    name = pg_cluster.create_database("shared_head")
    migrate(Settings(database_url=pg_cluster.url(name)), "upgrade", "head")
    return name


@pytest.fixture
def migrated_database_url(pg: PgCluster, _migrated_database: str) -> str:
    """A database at the head revision with every table emptied before the test.

    Shared between tests: a test that changes the schema must use ``database_url`` instead.
    """
    pg.execute(
        """
        DO $$
        DECLARE tables text;
        BEGIN
            SELECT string_agg(format('%I.%I', schemaname, tablename), ', ') INTO tables
            FROM pg_tables
            WHERE schemaname = 'public' AND tablename <> 'alembic_version';
            IF tables IS NOT NULL THEN
                EXECUTE 'TRUNCATE ' || tables || ' RESTART IDENTITY CASCADE';
            END IF;
        END $$;
        """,
        database=_migrated_database,
    )
    return pg.url(_migrated_database)


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """A clean slate for the service's environment variables and cached settings."""
    from app.core.config import get_settings

    for name in SERVICE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()
