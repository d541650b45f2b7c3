"""Running the package's console scripts as subprocesses, the way a deploy runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VENV_BIN = Path(sys.executable).parent

#: Environment variables the service reads; removed so a test states exactly what it sets.
SERVICE_VARIABLES = (
    "DATABASE_URL",
    "APP_RELEASE",
    "APP_ENV",
    "LOG_LEVEL",
    "HEALTH_DB_TIMEOUT",
    "DB_CONNECT_TIMEOUT",
    "PROMETHEUS_MULTIPROC_DIR",
)


def clean_env(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    env.update(variables)
    return env


@dataclass
class MigrateResult:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        """The single JSON line on stdout (fails the test if there is not exactly one)."""
        lines = self.stdout.splitlines()
        assert len(lines) == 1, f"expected one line on stdout, got {lines!r}\n{self.stderr}"
        result: dict[str, Any] = json.loads(lines[0])
        return result

    def last_json(self) -> dict[str, Any]:
        """The JSON object on the last stdout line (``plan`` prints SQL before it)."""
        lines = self.stdout.splitlines()
        assert lines, f"nothing on stdout\n{self.stderr}"
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    def text_before_json(self) -> str:
        """Everything on stdout before the last line."""
        return "".join(self.stdout.splitlines(keepends=True)[:-1])


def app_migrate(
    *args: str,
    database_url: str | None = None,
    cwd: Path | str = "/tmp",
    timeout: float = 60,
    **env: str,
) -> MigrateResult:
    """Run the venv's ``app-migrate`` console script (from ``/tmp`` by default)."""
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    proc = subprocess.run(
        [str(VENV_BIN / "app-migrate"), *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return MigrateResult(proc.returncode, proc.stdout, proc.stderr)
