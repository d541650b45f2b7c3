"""The wheel a release ships: migrations inside it, and they run from the installed copy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers.cli import clean_env

REQUIRED_FILES = {
    "app/__init__.py",
    "app/py.typed",
    "app/alembic.ini",
    "app/migrations/env.py",
    "app/migrations/script.py.mako",
    "app/migrations/versions/0001_create_notes.py",
    "app/migrations/versions/0002_add_notes_pinned.py",
    "app/gunicorn_hooks.py",
    "app/main.py",
    "app/migrate.py",
}


@pytest.fixture(scope="module")
def wheel(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel from a copy of the project files (the work tree stays clean)."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    shutil.copy2(repo_root / "pyproject.toml", src)
    if (repo_root / "README.md").exists():
        shutil.copy2(repo_root / "README.md", src)
    shutil.copytree(
        repo_root / "app", src / "app", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    out = work / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = out.glob("fastapi_metal_app-*.whl")
    return built


def test_the_wheel_ships_the_migrations_and_the_cli(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    assert not REQUIRED_FILES - names, sorted(REQUIRED_FILES - names)
    assert not [n for n in names if "__pycache__" in n or n.startswith("tests/")]
    assert "app-migrate = app.migrate:main" in scripts


def test_migrations_run_from_the_installed_wheel(
    wheel: Path, tmp_path: Path, database_url: str
) -> None:
    target = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert install.returncode == 0, install.stderr
    # The installed copy comes first on the path; cwd is not the source tree.
    env = clean_env(PYTHONPATH=str(target), DATABASE_URL=database_url)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args],
            cwd="/tmp",
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    where = run("-c", "import app.db.migrations as m; print(m.PACKAGE_DIR)")
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()) == target / "app"

    heads = run("-m", "app.migrate", "heads")
    assert heads.returncode == 0, heads.stderr
    assert json.loads(heads.stdout)["head"] == "0002"

    upgrade = run("-m", "app.migrate", "upgrade")
    assert upgrade.returncode == 0, upgrade.stderr
    assert json.loads(upgrade.stdout) == {
        "event": "migrate",
        "action": "upgrade",
        "from": None,
        "to": "0002",
        "head": "0002",
        "changed": True,
        "ahead": False,
    }
    # Alembic reads the revisions of the installed copy, not those of /work/main/app.
    revision_file = run(
        "-c",
        "from alembic.script import ScriptDirectory\n"
        "from app.db.migrations import alembic_config\n"
        "print(ScriptDirectory.from_config(alembic_config()).get_revision('0002').path)",
    )
    assert revision_file.returncode == 0, revision_file.stderr
    assert Path(revision_file.stdout.strip()).is_relative_to(target / "app" / "migrations")
