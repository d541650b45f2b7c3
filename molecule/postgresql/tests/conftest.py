"""Helpers shared by the postgresql scenario's tests: the peer containers and psql."""

from __future__ import annotations

import shlex

import pytest
import testinfra

DB = "fm-svc-pg-db"
APP = "fm-svc-pg-app"
OTHER = "fm-svc-pg-other"
# The scenario's throwaway test password (molecule.yml); real ones live in a vault.
PASSWORD = "molecule-only-not-a-secret"  # noqa: S105 - a test value, not a credential


@pytest.fixture(scope="session")
def app() -> testinfra.host.Host:
    return testinfra.get_host(f"podman://{APP}")


@pytest.fixture(scope="session")
def other() -> testinfra.host.Host:
    return testinfra.get_host(f"podman://{OTHER}")


def journal(host: testinfra.host.Host, unit: str) -> str:
    return host.run(f"journalctl -u {shlex.quote(unit)} --no-pager -n 50").stdout


def psql(
    client: testinfra.host.Host,
    sql: str,
    *,
    host: str = DB,
    user: str = "notes",
    dbname: str = "notes",
    password: str = PASSWORD,
):
    """psql over TCP from `client`, with a password and a 3 s connect timeout."""
    conninfo = f"host={host} user={user} dbname={dbname} connect_timeout=3"
    cmd = (
        f"PGPASSWORD={shlex.quote(password)} psql {shlex.quote(conninfo)} -XAtc {shlex.quote(sql)}"
    )
    return client.run(cmd)


def connect(client: testinfra.host.Host, port: int, host: str = DB) -> str:
    """Connect from `client`: "open", "refused" (reached the host) or "timeout" (dropped)."""
    code = (
        "import socket, sys\n"
        "try:\n"
        f"    socket.create_connection(({host!r}, {port}), timeout=3).close()\n"
        "except ConnectionRefusedError:\n"
        "    sys.exit('refused')\n"
        "except OSError:\n"
        "    sys.exit('timeout')\n"
    )
    out = client.run(f"python3 -c {shlex.quote(code)}")
    return "open" if out.rc == 0 else out.stderr.strip()


def superuser_sql(host: testinfra.host.Host, sql: str) -> str:
    """A query as the postgres superuser over the db host's local socket."""
    return host.check_output(f"runuser -u postgres -- psql -XAtc {shlex.quote(sql)}")
