"""Running the service under a real Gunicorn with Uvicorn workers, on a loopback port."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers.cli import VENV_BIN, clean_env
from tests.helpers.net import free_port, wait_for_http

#: A Gunicorn config that only imports the service's hooks, as a deploy's config would.
HOOKS_CONFIG = "from app.gunicorn_hooks import child_exit, on_starting  # noqa: F401\n"


@dataclass
class GunicornServer:
    proc: subprocess.Popen[bytes]
    base_url: str
    stdout_path: Path
    stderr_path: Path

    def json_lines(self) -> list[dict[str, Any]]:
        """Every JSON object the workers wrote to stdout so far."""
        lines = []
        for raw in self.stdout_path.read_text(errors="replace").splitlines():
            if raw.startswith("{"):
                lines.append(json.loads(raw))
        return lines

    def access_lines(self) -> list[dict[str, Any]]:
        return [line for line in self.json_lines() if line.get("event") == "request"]

    def logs(self) -> str:
        return (
            f"--- stdout ---\n{self.stdout_path.read_text(errors='replace')[-3000:]}\n"
            f"--- stderr ---\n{self.stderr_path.read_text(errors='replace')[-3000:]}"
        )


@contextlib.contextmanager
def run_gunicorn(
    tmp_dir: Path,
    *,
    env: dict[str, str],
    workers: int = 2,
    app: str = "app.main:app",
    config_text: str = HOOKS_CONFIG,
    ready_path: str = "/health",
) -> Iterator[GunicornServer]:
    """Start ``gunicorn -k uvicorn_worker.UvicornWorker`` and stop it (SIGTERM) afterwards."""
    port = free_port()
    config = tmp_dir / "gunicorn.conf.py"
    config.write_text(config_text)
    stdout_path, stderr_path = tmp_dir / "gunicorn.stdout", tmp_dir / "gunicorn.stderr"
    argv = [
        str(VENV_BIN / "gunicorn"),
        "-k",
        "uvicorn_worker.UvicornWorker",
        "-w",
        str(workers),
        "-b",
        f"127.0.0.1:{port}",
        "-c",
        str(config),
        "--graceful-timeout",
        "5",
        app,
    ]
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            argv, cwd=tmp_dir, env=clean_env(**env), stdout=out, stderr=err, start_new_session=True
        )
    server = GunicornServer(proc, f"http://127.0.0.1:{port}", stdout_path, stderr_path)
    try:
        try:
            wait_for_http(
                server.base_url + ready_path, timeout=60, alive=lambda: proc.poll() is None
            )
        except (TimeoutError, RuntimeError) as exc:
            raise RuntimeError(f"gunicorn did not come up: {exc}\n{server.logs()}") from None
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
