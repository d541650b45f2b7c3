"""The application factory: no work at import, clear failure at startup."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from app.core.config import SettingsError
from app.main import create_app
from tests.helpers.cli import clean_env
from tests.helpers.testclient import TestClient


def import_in_a_fresh_python(code: str, **env: str) -> None:
    """Run `code` (which imports the app and prints "imported") in a new interpreter."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=clean_env(**env),
        cwd="/tmp",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "imported"


def test_importing_the_app_needs_no_settings_and_no_database() -> None:
    # No DATABASE_URL at all: importing app.main (what gunicorn does first) must still work.
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise AssertionError('network use at import time')\n"
        "socket.socket.connect = refuse\n"
        "import app.main\n"
        "assert app.main.app.title\n"
        "print('imported')\n"
    )
    import_in_a_fresh_python(code)


def test_importing_the_app_with_a_database_url_opens_no_connection() -> None:
    # libpq connects from C, past a patched socket.connect: a listener that never accepts
    # keeps any connection the import made in its backlog.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        url = f"postgresql://app:import-probe@127.0.0.1:{port}/app"
        import_in_a_fresh_python(
            "import app.main\nassert app.main.app.title\nprint('imported')", DATABASE_URL=url
        )
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing connected
        # The listener does see a connection when one is made.
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            accepted, _peer = listener.accept()
            accepted.close()


def test_startup_fails_with_a_message_naming_the_variable(app_env: pytest.MonkeyPatch) -> None:
    client = TestClient(create_app())
    with pytest.raises(SettingsError, match="DATABASE_URL is required"), client:
        pass


def test_startup_refuses_a_placeholder_password(app_env: pytest.MonkeyPatch) -> None:
    app_env.setenv("DATABASE_URL", "postgresql://app:changeme@127.0.0.1:1/app")
    with (
        pytest.raises(SettingsError, match="DATABASE_URL contains a placeholder"),
        TestClient(create_app()),
    ):
        pass


def test_settings_come_from_the_environment_at_startup(
    app_env: pytest.MonkeyPatch, migrated_database_url: str
) -> None:
    app_env.setenv("DATABASE_URL", migrated_database_url)
    app_env.setenv("APP_RELEASE", "from-env")
    with TestClient(create_app()) as client:
        response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["release"] == "from-env"
    assert response.headers["X-App-Release"] == "from-env"
