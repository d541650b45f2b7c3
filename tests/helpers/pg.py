"""A throwaway PostgreSQL cluster for tests, built with the server's own binaries.

The cluster lives in a temporary directory, listens on 127.0.0.1 on a free port (never 5432)
with its unix socket in that directory, and never touches the system's clusters. PostgreSQL
refuses to run as root, so when the tests run as root the server commands run as the
``postgres`` system user (``runuser``).

Superuser access is over the private unix socket (trust); TCP needs a password
(scram-sha-256), as on the servers this project deploys to.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg

from tests.helpers.net import free_port

PG_BIN_CANDIDATES = (Path("/usr/lib/postgresql/15/bin"),)
SERVER_USER = "postgres"


def find_pg_bin() -> Path | None:
    """The directory holding initdb/pg_ctl (``PG_BIN`` overrides), or None."""
    override = os.environ.get("PG_BIN")
    candidates = (Path(override),) if override else PG_BIN_CANDIDATES
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    return None


def missing_pg_bin_message() -> str:
    """Why find_pg_bin() found nothing, and what to install (for a test failure)."""
    override = os.environ.get("PG_BIN")
    if override:
        where = f"PG_BIN={override} has no initdb and pg_ctl"
    else:
        where = "no initdb and pg_ctl in " + ", ".join(str(c) for c in PG_BIN_CANDIDATES)
    return (
        f"PostgreSQL 15 server binaries not found ({where}): install them with "
        "`apt-get install postgresql-15` (make setup does), or set PG_BIN to the directory "
        "that holds initdb and pg_ctl"
    )


@dataclass
class PgCluster:
    """One cluster: ``start()``, ``create_database()``, ``stop()``, ``destroy()``."""

    bin_dir: Path
    base_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fm-pg-")))
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    app_user: str = "app"
    app_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir / "run"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "server.log"

    # -- running commands as the server's user -------------------------------------------
    def _as_server_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", SERVER_USER, "--", *argv]
        return argv

    def _run(self, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self._as_server_user(argv),
            cwd=self.base_dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
                f"\n--- server log ---\n{self.server_log()}"
            )
        return result

    def server_log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    # -- lifecycle -------------------------------------------------------------------------
    def init(self) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SERVER_USER)
            os.chown(self.base_dir, entry.pw_uid, entry.pw_gid)
        self.base_dir.chmod(0o700)
        self._run(
            [
                str(self.bin_dir / "initdb"),
                "--pgdata",
                str(self.data_dir),
                "--username",
                "postgres",
                "--auth-local",
                "trust",
                "--auth-host",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--locale",
                "C.UTF-8",
                "--no-sync",
                "--no-instructions",
            ]
        )
        self._run(["mkdir", "-p", str(self.socket_dir)])

    def start(self) -> None:
        options = " ".join(
            [
                f"-p {self.port}",
                f"-k {self.socket_dir}",
                f"-c listen_addresses={self.host}",
                # Durability is irrelevant for a throwaway cluster; speed is not.
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=60",
                "-c shared_buffers=32MB",
            ]
        )
        self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "--pgdata",
                str(self.data_dir),
                "--log",
                str(self.log_file),
                "--options",
                options,
                "--wait",
                "--timeout",
                "60",
                "start",
            ],
            timeout=90,
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "--pgdata",
                str(self.data_dir),
                "--mode",
                mode,
                "--wait",
                "stop",
            ],
            timeout=90,
        )

    def is_running(self) -> bool:
        result = subprocess.run(
            self._as_server_user(
                [str(self.bin_dir / "pg_ctl"), "--pgdata", str(self.data_dir), "status"]
            ),
            cwd=self.base_dir,
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def destroy(self) -> None:
        if self.data_dir.exists() and self.is_running():
            self.stop(mode="immediate")
        shutil.rmtree(self.base_dir, ignore_errors=True)

    # -- SQL as the superuser over the socket ----------------------------------------------
    def psql(self, sql: str, database: str = "postgres") -> str:
        result = self._run(
            [
                str(self.bin_dir / "psql"),
                "--no-psqlrc",
                "--host",
                str(self.socket_dir),
                "--port",
                str(self.port),
                "--username",
                "postgres",
                "--dbname",
                database,
                "--set",
                "ON_ERROR_STOP=1",
                "--tuples-only",
                "--no-align",
                "--command",
                sql,
            ]
        )
        return result.stdout.strip()

    def execute(self, sql: str, database: str = "postgres") -> None:
        """Run ``sql`` as the superuser over the unix socket (faster than ``psql``)."""
        with psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user="postgres",
            dbname=database,
            autocommit=True,
            connect_timeout=5,
        ) as connection:
            connection.execute(sql.encode())

    def create_app_role(self) -> None:
        password = self.app_password.replace("'", "''")
        self.execute(f"CREATE ROLE {self.app_user} LOGIN PASSWORD '{password}'")

    def create_database(self, name: str | None = None, template: str | None = None) -> str:
        """A new database owned by the app role (a copy of ``template`` if given)."""
        name = name or f"t_{int(time.time() * 1000) % 10**9}_{secrets.token_hex(3)}"
        copy = f' TEMPLATE "{template}"' if template else ""
        self.execute(f'CREATE DATABASE "{name}" OWNER {self.app_user}{copy}')
        return name

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def url(self, database: str, *, port: int | None = None, host: str | None = None) -> str:
        """``postgresql://`` URL for the app role over TCP (password auth)."""
        return (
            f"postgresql://{quote(self.app_user, safe='')}:{quote(self.app_password, safe='')}"
            f"@{host or self.host}:{port or self.port}/{database}"
        )


def start_cluster(bin_dir: Path) -> PgCluster:
    cluster = PgCluster(bin_dir=bin_dir)
    try:
        cluster.init()
        cluster.start()
        cluster.create_app_role()
    except BaseException:
        cluster.destroy()
        raise
    return cluster
