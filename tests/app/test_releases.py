"""The lab's release variants (tests/lab/releases.py): each one does what its name promises.

Variants run from their copy with ``PYTHONPATH=<copy>`` from /tmp (the copy's ``app`` comes
before the venv's editable install), against the throwaway PostgreSQL.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.app.conftest import ClientFactory
from tests.helpers.cli import clean_env
from tests.helpers.role_defaults import role_defaults
from tests.lab.releases import (
    INFO_FILE,
    ReleaseBuildError,
    make_release,
    read_release_info,
)

BASE_HEAD = "0002"


def _run(
    release: Path, *args: str, database_url: str | None = None, **variables: str
) -> subprocess.CompletedProcess[str]:
    """``python <args>`` with the release's code first on the path, from /tmp."""
    env = clean_env(PYTHONPATH=str(release), **variables)
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, *args],
        cwd="/tmp",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _migrate(release: Path, *args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    return _run(release, "-m", "app.migrate", *args, database_url=database_url)


def _last_json(proc: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    return result


def _psycopg_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _columns(url: str) -> set[str]:
    with psycopg.connect(_psycopg_url(url)) as connection:
        rows = connection.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'notes'"
        ).fetchall()
    return {row[0] for row in rows}


def _version(url: str) -> list[str]:
    with psycopg.connect(_psycopg_url(url)) as connection:
        return [row[0] for row in connection.execute("SELECT version_num FROM alembic_version")]


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A..F as a rolling-upgrade test builds them (about 10 ms each)."""
    root = tmp_path_factory.mktemp("releases")
    return {
        "A": make_release(root / "a", "base", "0.2.0"),
        "B": make_release(root / "b", "additive", "0.3.0"),
        "C": make_release(root / "c", ["additive", "broken-health"], "0.4.0"),
        "D": make_release(root / "d", ["additive", "failing-migration"], "0.5.0"),
        "E": make_release(root / "e", ["additive", "destructive"], "0.6.0"),
        "F": make_release(root / "f", ["additive", "renaming"], "0.7.0"),
        "G": make_release(root / "g", ["additive", "data-loss"], "0.8.0"),
    }


def test_a_release_is_a_versioned_copy_of_the_packaging_files(
    releases: dict[str, Path], repo_root: Path
) -> None:
    a = releases["A"]
    assert sorted(p.name for p in a.iterdir()) == ["README.md", "app", INFO_FILE, "pyproject.toml"]
    assert tomllib.loads((a / "pyproject.toml").read_text())["project"]["version"] == "0.2.0"
    assert '__version__ = "0.2.0"' in (a / "app" / "__init__.py").read_text()
    assert not list(a.rglob("__pycache__"))
    # Everything else is byte for byte the repository's code.
    for path in (repo_root / "app").rglob("*.py"):
        if "__pycache__" in path.parts or path.name == "__init__.py":
            continue
        assert (a / path.relative_to(repo_root)).read_bytes() == path.read_bytes(), path
    info = read_release_info(a)
    assert (info.head_before, info.head, info.revisions_added) == (BASE_HEAD, BASE_HEAD, [])
    # The repository itself is never touched.
    assert not list((repo_root / "app").rglob("*lab*"))


def test_stacked_variants_share_the_additive_revision(releases: dict[str, Path]) -> None:
    additive = releases["B"] / "app/migrations/versions/0003_lab_add_notes_color.py"
    for name in "CDEF":
        copy = releases[name] / "app/migrations/versions/0003_lab_add_notes_color.py"
        assert copy.read_bytes() == additive.read_bytes(), name
    assert read_release_info(releases["B"]).head == "0003"
    for name in "DEF":
        info = read_release_info(releases[name])
        assert (info.head_before, info.revisions_added, info.head) == (
            BASE_HEAD,
            ["0003", "0004"],
            "0004",
        )
    assert read_release_info(releases["E"]).columns == {"destructive": "color"}


def test_the_head_is_read_from_the_copied_revisions(
    releases: dict[str, Path], tmp_path: Path
) -> None:
    # Built on top of B (whose head is 0003), as if 0003 were a real revision of the project.
    on_b = make_release(tmp_path / "g", "failing-migration", "0.8.0", source=releases["B"])
    revision = on_b / "app/migrations/versions/0004_lab_failing_migration.py"
    assert "down_revision: str | None = '0003'" in revision.read_text()
    heads = _run(on_b, "-m", "app.migrate", "heads")
    assert _last_json(heads)["head"] == "0004"


def test_bad_requests_fail_loudly(tmp_path: Path, repo_root: Path) -> None:
    with pytest.raises(ValueError, match="unknown release kind"):
        make_release(tmp_path / "x", "sideways", "1.0")
    with pytest.raises(ValueError, match="once"):
        make_release(tmp_path / "x", ["additive", "additive"], "1.0")
    with pytest.raises(ValueError, match="PEP 440"):
        make_release(tmp_path / "x", "base", "not a version")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file").touch()
    with pytest.raises(FileExistsError):
        make_release(tmp_path / "full", "base", "1.0")
    # The patch target of broken-health is gone: the build says so instead of shipping a no-op.
    source = make_release(tmp_path / "src", "base", "1.0")
    main = source / "app" / "main.py"
    main.write_text(main.read_text().replace("add_middleware(RequestContextMiddleware)", "pass"))
    with pytest.raises(ReleaseBuildError, match="broken-health"):
        make_release(tmp_path / "y", "broken-health", "1.0", source=source)


def test_additive_upgrades_to_the_new_head_and_the_old_code_keeps_working(
    releases: dict[str, Path], database_url: str, make_client: ClientFactory
) -> None:
    assert _last_json(_migrate(releases["A"], "upgrade", database_url=database_url))["to"] == "0002"
    with psycopg.connect(_psycopg_url(database_url), autocommit=True) as connection:
        connection.execute("INSERT INTO notes (title) VALUES ('written by A')")

    plan = _migrate(releases["B"], "plan", database_url=database_url)
    assert _last_json(plan)["pending"] == ["0003"]
    assert "ADD COLUMN color" in plan.stdout

    upgrade = _last_json(_migrate(releases["B"], "upgrade", database_url=database_url))
    assert (upgrade["from"], upgrade["to"], upgrade["changed"]) == ("0002", "0003", True)
    assert "color" in _columns(database_url)

    # The release still serving (this repository's code, schema 0002) reads and writes.
    client = make_client(database_url)
    created = client.post("/notes", json={"title": "written by A on schema 0003"})
    assert created.status_code == 201, created.text
    listed = client.get("/notes", params={"limit": 5})
    assert listed.status_code == 200
    assert [n["title"] for n in listed.json()] == ["written by A", "written by A on schema 0003"]
    with psycopg.connect(_psycopg_url(database_url)) as connection:
        colors = connection.execute("SELECT color FROM notes ORDER BY id").fetchall()
    assert colors == [("yellow",), ("yellow",)]


@pytest.mark.parametrize("start", ["0002", "0003"])
def test_a_failing_migration_exits_1_and_leaves_the_previous_head(
    releases: dict[str, Path], database_url: str, start: str
) -> None:
    before = releases["A"] if start == "0002" else releases["B"]
    assert _migrate(before, "upgrade", database_url=database_url).returncode == 0
    columns = _columns(database_url)

    result = _migrate(releases["D"], "upgrade", database_url=database_url)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout == ""
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("app-migrate: error:"), last
    assert "table_that_does_not_exist" in last
    # One transaction: 0003 (when pending) and the marker column went back with the failure.
    assert _version(database_url) == [start]
    assert _columns(database_url) == columns
    assert "lab_failing_marker" not in _columns(database_url)


def test_destructive_and_renaming_plans_show_drop_and_rename(
    releases: dict[str, Path], database_url: str
) -> None:
    assert _migrate(releases["B"], "upgrade", database_url=database_url).returncode == 0

    destructive = _migrate(releases["E"], "plan", database_url=database_url)
    summary = _last_json(destructive)
    assert (summary["from"], summary["to"], summary["pending"]) == ("0003", "0004", ["0004"])
    assert "ALTER TABLE notes DROP COLUMN color;" in destructive.stdout

    renaming = _migrate(releases["F"], "plan", database_url=database_url)
    assert _last_json(renaming)["pending"] == ["0004"]
    assert "ALTER TABLE notes RENAME color TO color_renamed;" in renaming.stdout

    # A plan is only a plan.
    assert _version(database_url) == ["0003"]
    assert "color" in _columns(database_url)


def _role_destructive_patterns(repo_root: Path) -> re.Pattern[str]:
    """The deploy role's scan, as ``roles/fastapi_app/tasks/plan.yml`` applies it."""
    defaults = repo_root / "roles" / "fastapi_app" / "defaults" / "main.yml"
    # The role is part of this repository: a missing file or variable is a broken role (the
    # deploy would scan with nothing), not a reason to skip the test.
    assert defaults.is_file(), f"{defaults} is missing"
    patterns = role_defaults("fastapi_app").get("fastapi_app_destructive_patterns")
    assert patterns, f"fastapi_app_destructive_patterns is not set in {defaults}"
    return re.compile("(?i)" + "|".join(patterns))


def test_the_deploy_roles_scan_flags_exactly_the_destructive_variants(
    releases: dict[str, Path], database_url: str, repo_root: Path
) -> None:
    scan = _role_destructive_patterns(repo_root)
    assert _migrate(releases["A"], "upgrade", database_url=database_url).returncode == 0
    flagged = {}
    for name in "BCDEF":
        plan = _migrate(releases[name], "plan", database_url=database_url)
        assert plan.returncode == 0, plan.stderr
        flagged[name] = [line for line in plan.stdout.splitlines() if scan.search(line)]
    assert flagged == {
        "B": [],
        "C": [],
        "D": [],
        "E": ["ALTER TABLE notes DROP COLUMN color;"],
        "F": ["ALTER TABLE notes RENAME color TO color_renamed;"],
    }


def test_a_data_loss_migration_passes_the_scan_and_deletes_every_note(
    releases: dict[str, Path], database_url: str, repo_root: Path
) -> None:
    """What only a restore undoes: the schema scan lets it through, and the notes are gone."""
    assert _migrate(releases["B"], "upgrade", database_url=database_url).returncode == 0
    with psycopg.connect(_psycopg_url(database_url)) as connection:
        connection.execute("INSERT INTO notes (title) VALUES ('kept?')")
    plan = _migrate(releases["G"], "plan", database_url=database_url)
    assert "DELETE FROM notes;" in plan.stdout, plan.stdout
    scan = _role_destructive_patterns(repo_root)
    assert not [line for line in plan.stdout.splitlines() if scan.search(line)]
    assert _migrate(releases["G"], "upgrade", database_url=database_url).returncode == 0
    with psycopg.connect(_psycopg_url(database_url)) as connection:
        assert connection.execute("SELECT count(*) FROM notes").fetchone() == (0,)
    assert _version(database_url) == ["0004"]


def test_destructive_without_additive_drops_an_existing_column(tmp_path: Path) -> None:
    release = make_release(tmp_path / "e", "destructive", "0.6.1")
    assert read_release_info(release).columns == {"destructive": "pinned"}
    text = (release / "app/migrations/versions/0003_lab_drop_notes_pinned.py").read_text()
    assert 'op.drop_column("notes", "pinned")' in text


BROKEN_HEALTH_PROBE = """
import json, warnings
warnings.simplefilter("ignore")
import app
from app.core.config import Settings
from app.main import create_app
from fastapi.testclient import TestClient

with TestClient(create_app(Settings())) as client:
    answers = {
        path: [client.get(path).status_code, client.get(path).headers.get("x-app-release")]
        for path in ("/health", "/health/ready", "/notes?limit=1")
    }
print(json.dumps({"file": app.__file__, "version": app.__version__, "answers": answers}))
"""


def test_broken_health_starts_but_answers_503_on_health_only(
    releases: dict[str, Path], database_url: str
) -> None:
    assert _migrate(releases["C"], "upgrade", database_url=database_url).returncode == 0
    probe = _run(
        releases["C"], "-c", BROKEN_HEALTH_PROBE, database_url=database_url, APP_RELEASE="C"
    )
    assert probe.returncode == 0, probe.stderr
    result = json.loads(probe.stdout.splitlines()[-1])
    assert Path(result["file"]).is_relative_to(releases["C"])
    assert result["version"] == "0.4.0"
    assert result["answers"] == {
        "/health": [503, "C"],
        "/health/ready": [503, "C"],
        "/notes?limit=1": [200, "C"],
    }
    # The same probe on B (same schema, no patch): healthy, so the 503s come from the variant.
    healthy = _run(
        releases["B"], "-c", BROKEN_HEALTH_PROBE, database_url=database_url, APP_RELEASE="B"
    )
    assert healthy.returncode == 0, healthy.stderr
    assert json.loads(healthy.stdout.splitlines()[-1])["answers"]["/health/ready"] == [200, "B"]


def test_a_stacked_variant_builds_a_wheel_with_its_version_and_files(
    releases: dict[str, Path], tmp_path: Path
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
         str(releases["C"])],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = tmp_path.glob("fastapi_metal_app-0.4.0-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert "app/lab_broken_health.py" in names
    assert "app/migrations/versions/0003_lab_add_notes_color.py" in names
    assert INFO_FILE not in names
