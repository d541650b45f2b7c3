"""``app-migrate``, run as the deploy runs it: the venv's console script, from /tmp."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from app.db.migrations import MIGRATION_LOCK_KEY, PACKAGE_DIR, expected_head
from tests.helpers.cli import VENV_BIN, app_migrate, clean_env
from tests.helpers.net import free_port
from tests.helpers.pg import PgCluster

HEAD = "0002"


def _psycopg_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _columns(url: str) -> set[str]:
    with psycopg.connect(_psycopg_url(url)) as connection:
        rows = connection.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'notes'"
        ).fetchall()
    return {row[0] for row in rows}


def test_the_packaged_head_is_the_newest_revision() -> None:
    versions = sorted(p.name for p in (PACKAGE_DIR / "migrations" / "versions").glob("0*.py"))
    assert versions[-1].startswith(HEAD)
    assert expected_head() == HEAD


def test_heads_needs_no_database_and_no_source_tree() -> None:
    # cwd=/tmp and no DATABASE_URL: the scripts are found through the package, not the cwd.
    result = app_migrate("heads", cwd="/tmp")
    assert result.returncode == 0, result.stderr
    assert result.json() == {"event": "heads", "head": HEAD, "heads": [HEAD]}


def test_upgrade_downgrade_upgrade_reports_each_move(database_url: str) -> None:
    first = app_migrate("upgrade", database_url=database_url)
    assert first.returncode == 0, first.stderr
    assert first.json() == {
        "event": "migrate",
        "action": "upgrade",
        "from": None,
        "to": HEAD,
        "head": HEAD,
        "changed": True,
        "ahead": False,
    }
    assert {"id", "title", "body", "pinned", "created_at", "updated_at"} <= _columns(database_url)
    assert "migration lock acquired" in first.stderr

    again = app_migrate("upgrade", "head", database_url=database_url)
    assert again.returncode == 0, again.stderr
    assert again.json()["changed"] is False
    assert (again.json()["from"], again.json()["to"]) == (HEAD, HEAD)

    current = app_migrate("current", database_url=database_url)
    assert current.returncode == 0, current.stderr
    assert current.json() == {"event": "current", "current": HEAD, "head": HEAD, "up_to_date": True}

    down = app_migrate("downgrade", "base", database_url=database_url)
    assert down.returncode == 0, down.stderr
    assert down.json() == {
        "event": "migrate",
        "action": "downgrade",
        "from": HEAD,
        "to": None,
        "head": HEAD,
        "changed": True,
        "ahead": False,
    }
    assert _columns(database_url) == set()
    current = app_migrate("current", database_url=database_url)
    assert current.json()["current"] is None
    assert current.json()["up_to_date"] is False

    step = app_migrate("upgrade", "0001", database_url=database_url)
    assert step.json()["to"] == "0001"
    assert "pinned" not in _columns(database_url)

    final = app_migrate("upgrade", database_url=database_url)
    assert final.returncode == 0, final.stderr
    assert (final.json()["from"], final.json()["to"], final.json()["changed"]) == (
        "0001",
        HEAD,
        True,
    )
    assert "pinned" in _columns(database_url)


def test_rows_written_by_the_previous_schema_get_the_new_default(database_url: str) -> None:
    # Expand-only: the release still serving (schema 0001) keeps inserting after 0002.
    assert app_migrate("upgrade", "0001", database_url=database_url).returncode == 0
    with psycopg.connect(_psycopg_url(database_url), autocommit=True) as connection:
        connection.execute("INSERT INTO notes (title) VALUES ('old release')")
        assert app_migrate("upgrade", database_url=database_url).returncode == 0
        connection.execute("INSERT INTO notes (title) VALUES ('old code, new schema')")
        rows = connection.execute("SELECT title, pinned FROM notes ORDER BY id").fetchall()
    assert rows == [("old release", False), ("old code, new schema", False)]


def test_a_missing_database_url_exits_2_naming_it() -> None:
    result = app_migrate("upgrade")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "app-migrate: error:" in result.stderr
    assert "DATABASE_URL is required" in result.stderr


def test_a_placeholder_password_exits_2_in_production() -> None:
    result = app_migrate("current", database_url="postgresql://app:changeme@127.0.0.1:1/app")
    assert result.returncode == 2
    assert "DATABASE_URL contains a placeholder password" in result.stderr


def test_an_unreachable_database_exits_1_with_a_clear_message(pg: PgCluster) -> None:
    url = pg.url("app", port=free_port())
    for command in (["upgrade"], ["current"]):
        result = app_migrate(*command, database_url=url)
        assert result.returncode == 1, command
        assert result.stdout == ""
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("app-migrate: error: database error:"), last
        assert "Connection refused" in last or "connection failed" in last
        assert pg.app_password not in result.stderr


def test_an_unknown_revision_exits_1(database_url: str) -> None:
    result = app_migrate("upgrade", "9999", database_url=database_url)
    assert result.returncode == 1
    assert "app-migrate: error:" in result.stderr
    assert "9999" in result.stderr


def test_usage_errors_exit_2() -> None:
    assert app_migrate().returncode == 2
    assert app_migrate("downgrade").returncode == 2
    assert app_migrate("sideways").returncode == 2


def test_concurrent_deploys_migrate_one_after_the_other(database_url: str, tmp_path: Path) -> None:
    # Another deploy holds the migration lock: app-migrate must wait, not migrate alongside.
    with psycopg.connect(_psycopg_url(database_url), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK_KEY])
        stderr_path = tmp_path / "stderr"
        with stderr_path.open("w") as stderr:
            proc = subprocess.Popen(
                [str(VENV_BIN / "app-migrate"), "upgrade"],
                cwd="/tmp",
                env=clean_env(DATABASE_URL=database_url),
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
            try:
                deadline = time.monotonic() + 20
                while "waiting for the migration lock" not in stderr_path.read_text():
                    assert proc.poll() is None, stderr_path.read_text()
                    assert time.monotonic() < deadline, "app-migrate never waited for the lock"
                    time.sleep(0.05)
                time.sleep(0.3)
                assert proc.poll() is None, "app-migrate went ahead without the lock"
                present = holder.execute("SELECT to_regclass('alembic_version')").fetchone()
                assert present == (None,), "migrated while another session held the lock"

                holder.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK_KEY])
                stdout, _stderr = proc.communicate(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    assert proc.returncode == 0, stderr_path.read_text()
    assert '"changed":true' in stdout
    assert "migration lock acquired" in stderr_path.read_text()


@pytest.mark.parametrize("revision", ["base"])
def test_downgrade_of_an_empty_database_changes_nothing(database_url: str, revision: str) -> None:
    result = app_migrate("downgrade", revision, database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert result.json()["changed"] is False
    assert result.json()["from"] is None


def test_the_models_match_the_migrations(database_url: str) -> None:
    # What autogenerate would write after head must be nothing: models and revisions agree.
    from alembic import command

    from app.core.config import Settings
    from app.db.migrations import alembic_config
    from app.migrate import migrate

    settings = Settings(database_url=database_url)
    migrate(settings, "upgrade", "head")
    command.check(alembic_config(settings))  # raises AutogenerateDiffsDetected otherwise


def _version(url: str) -> list[str] | None:
    """alembic_version's rows, or None when the table does not exist."""
    with psycopg.connect(_psycopg_url(url)) as connection:
        if connection.execute("SELECT to_regclass('alembic_version')").fetchone() == (None,):
            return None
        return [row[0] for row in connection.execute("SELECT version_num FROM alembic_version")]


def test_plan_of_an_empty_database_is_the_whole_schema_and_runs_as_printed(
    database_url: str,
) -> None:
    result = app_migrate("plan", database_url=database_url)
    assert result.returncode == 0, result.stderr
    summary = result.last_json()
    assert summary == {
        "event": "plan",
        "from": None,
        "to": HEAD,
        "pending": ["0001", "0002"],
        "statements": summary["statements"],
        "ahead": False,
    }
    sql = result.text_before_json()
    assert sql.startswith("BEGIN;")
    assert sql.rstrip().endswith("COMMIT;")
    assert "CREATE TABLE alembic_version" in sql
    assert "CREATE TABLE notes" in sql
    assert "ALTER TABLE notes ADD COLUMN pinned" in sql
    terminated = [line for line in sql.splitlines() if line.rstrip().endswith(";")]
    assert summary["statements"] == len(terminated) == 8
    assert _version(database_url) is None, "plan must not touch the database"

    # The printed SQL is what upgrade would do: run it by hand, the schema is then at head.
    with psycopg.connect(_psycopg_url(database_url), autocommit=True) as connection:
        connection.execute(sql.encode())
    current = app_migrate("current", database_url=database_url)
    assert current.json()["up_to_date"] is True
    assert "pinned" in _columns(database_url)


def test_plan_from_a_revision_lists_what_is_pending_and_changes_nothing(database_url: str) -> None:
    assert app_migrate("upgrade", "0001", database_url=database_url).returncode == 0
    # plan takes no migration lock: it answers while another deploy is migrating.
    with psycopg.connect(_psycopg_url(database_url), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK_KEY])
        result = app_migrate("plan", database_url=database_url, timeout=20)
    assert result.returncode == 0, result.stderr
    assert result.last_json() == {
        "event": "plan",
        "from": "0001",
        "to": HEAD,
        "pending": ["0002"],
        "statements": 5,  # BEGIN, ALTER, CREATE INDEX, UPDATE alembic_version, COMMIT
        "ahead": False,
    }
    sql = result.text_before_json()
    assert "-- Running upgrade 0001 -> 0002" in sql
    assert "CREATE TABLE" not in sql
    assert "UPDATE alembic_version SET version_num='0002'" in sql
    assert _version(database_url) == ["0001"]
    assert "pinned" not in _columns(database_url)


def test_plan_at_head_prints_only_the_summary(database_url: str) -> None:
    assert app_migrate("upgrade", database_url=database_url).returncode == 0
    result = app_migrate("plan", database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert result.json() == {
        "event": "plan",
        "from": HEAD,
        "to": HEAD,
        "pending": [],
        "statements": 0,
        "ahead": False,
    }


def test_a_database_from_a_newer_release_is_left_as_it_is(database_url: str) -> None:
    """What a rollback leaves: the schema ahead of the release. ``plan`` and ``upgrade head``
    succeed and change nothing (the older code runs on the expanded schema); an explicit
    target this release does not know still fails."""
    assert app_migrate("upgrade", database_url=database_url).returncode == 0
    with psycopg.connect(_psycopg_url(database_url), autocommit=True) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0099'")

    plan = app_migrate("plan", database_url=database_url)
    assert plan.returncode == 0, plan.stderr
    assert plan.json() == {
        "event": "plan",
        "from": "0099",
        "to": "0099",
        "pending": [],
        "statements": 0,
        "ahead": True,
    }
    assert "database ahead of this release" in plan.stderr

    upgrade = app_migrate("upgrade", "head", database_url=database_url)
    assert upgrade.returncode == 0, upgrade.stderr
    assert upgrade.json() == {
        "event": "migrate",
        "action": "upgrade",
        "from": "0099",
        "to": "0099",
        "head": HEAD,
        "changed": False,
        "ahead": True,
    }
    assert "migration lock acquired" not in upgrade.stderr, "nothing was run"
    assert _version(database_url) == ["0099"]

    explicit = app_migrate("upgrade", HEAD, database_url=database_url)
    assert explicit.returncode == 1
    assert explicit.stdout == ""
    assert "0099" in explicit.stderr.strip().splitlines()[-1]
    assert _version(database_url) == ["0099"]


def test_plan_without_a_database_url_exits_2() -> None:
    result = app_migrate("plan")
    assert result.returncode == 2
    assert "DATABASE_URL is required" in result.stderr
