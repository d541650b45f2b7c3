"""/health and /health/ready: status, body, release and a hard time bound."""

from __future__ import annotations

import time

from app.db.migrations import expected_head
from tests.app.conftest import RELEASE, ClientFactory
from tests.helpers.cli import app_migrate
from tests.helpers.net import blackhole_listener, free_port
from tests.helpers.pg import PgCluster
from tests.helpers.testclient import TestClient

# The brief the deploy relies on: an answer within 2 s, whatever the database does.
HEALTH_BUDGET_S = 2.0


def _timed_get(client: TestClient, path: str) -> tuple[float, object]:
    started = time.monotonic()
    response = client.get(path)
    return time.monotonic() - started, response


def test_health_is_200_healthy_with_the_release(client: TestClient) -> None:
    response = client.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "healthy", "database": "ok", "release": RELEASE}
    assert response.headers["X-App-Release"] == RELEASE
    assert response.headers["Cache-Control"] == "no-store"


def test_health_is_503_at_once_when_nothing_listens(
    make_client: ClientFactory, pg: PgCluster
) -> None:
    client = make_client(pg.url("nowhere", port=free_port()))

    started = time.monotonic()
    response = client.get("/health")
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["database"] == "error"
    assert body["release"] == RELEASE
    assert body["detail"] == "cannot connect to the database"
    assert response.headers["X-App-Release"] == RELEASE
    # At once: a refused connection is not waited out like a silent one (HEALTH_DB_TIMEOUT 1.5 s).
    assert elapsed < 1.0, f"took {elapsed:.2f}s"


def test_health_answers_503_within_2s_when_the_database_hangs(
    make_client: ClientFactory, pg: PgCluster
) -> None:
    with blackhole_listener() as port:
        # DB_CONNECT_TIMEOUT (5 s) is longer than the budget: only the health timeout helps.
        client = make_client(pg.url("app", port=port))
        for path in ("/health", "/health/ready"):
            started = time.monotonic()
            response = client.get(path)
            elapsed = time.monotonic() - started

            assert response.status_code == 503, path
            assert elapsed < HEALTH_BUDGET_S, f"{path} took {elapsed:.2f}s"
            assert elapsed >= 1.0, "should have waited about HEALTH_DB_TIMEOUT (1.5 s)"
            body = response.json()
            assert body["database"] == "error"
            assert body["release"] == RELEASE
            assert body["detail"] == "no answer from the database within 1.5s"


def test_health_timeout_follows_the_setting(make_client: ClientFactory, pg: PgCluster) -> None:
    with blackhole_listener() as port:
        client = make_client(pg.url("app", port=port), health_db_timeout=0.3)
        started = time.monotonic()
        response = client.get("/health")
        elapsed = time.monotonic() - started
        assert response.status_code == 503
        assert 0.25 <= elapsed < 1.0, f"took {elapsed:.2f}s"
        assert response.json()["detail"] == "no answer from the database within 0.3s"


def test_health_degrades_when_the_database_stops_and_recovers_when_it_is_back(
    make_client: ClientFactory, pg: PgCluster, migrated_database_url: str
) -> None:
    client = make_client(migrated_database_url)
    assert client.get("/health").status_code == 200
    assert client.post("/notes", json={"title": "before"}).status_code == 201

    pg.stop()
    try:
        started = time.monotonic()
        down = client.get("/health")
        assert down.status_code == 503
        assert time.monotonic() - started < HEALTH_BUDGET_S
        assert down.json()["status"] == "degraded"
        assert down.json()["release"] == RELEASE
        # The API says "unavailable", not "internal error", while the database is away.
        notes = client.get("/notes")
        assert notes.status_code == 503
        assert notes.json() == {"detail": "database unavailable"}
    finally:
        pg.start()

    # Same app, same pool: connections broken by the restart are replaced (pool_pre_ping).
    up = client.get("/health")
    assert up.status_code == 200
    assert up.json()["status"] == "healthy"
    assert [n["title"] for n in client.get("/notes").json()] == ["before"]


def test_ready_is_503_before_migrations_and_200_after(
    make_client: ClientFactory, database_url: str
) -> None:
    client = make_client(database_url)
    head = expected_head()

    before = client.get("/health/ready")
    assert before.status_code == 503
    assert before.json() == {
        "status": "not_ready",
        "database": "ok",
        "release": RELEASE,
        "database_revision": None,
        "expected_revision": head,
        "detail": f"database schema is at no revision, this release needs {head}",
    }
    # Liveness does not care about the schema.
    assert client.get("/health").status_code == 200

    assert app_migrate("upgrade", "0001", database_url=database_url).returncode == 0
    behind = client.get("/health/ready")
    assert behind.status_code == 503
    assert behind.json()["database_revision"] == "0001"

    assert app_migrate("upgrade", "head", database_url=database_url).returncode == 0
    after = client.get("/health/ready")
    assert after.status_code == 200
    assert after.json() == {
        "status": "ready",
        "database": "ok",
        "release": RELEASE,
        "database_revision": head,
        "expected_revision": head,
    }


def test_ready_is_503_with_database_error_when_nothing_listens(
    make_client: ClientFactory, pg: PgCluster
) -> None:
    client = make_client(pg.url("nowhere", port=free_port()))
    response = client.get("/health/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["database"] == "error"
    assert body["database_revision"] is None
    assert body["expected_revision"] == expected_head()
    assert body["release"] == RELEASE
