"""Helpers shared by the postgresql scenario's tests: the peer containers and psql."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
import testinfra

# The exact expectations and their comparisons live in tests/helpers/pg_expect.py, where
# tests/roles/test_pg_expect.py shows each one fail on a wrong PostgreSQL before it is used here.
REPO_ROOT = Path(__file__).resolve().parents[3]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

DB = "fm-svc-pg-db"
APP = "fm-svc-pg-app"
OTHER = "fm-svc-pg-other"
# The scenario's throwaway test password (molecule.yml); real ones live in a vault.
PASSWORD = "molecule-only-not-a-secret"  # noqa: S105 - a test value, not a credential
# The address side_effect.yml adds to postgresql_hba_sources (TEST-NET-1: no host has it)
# before verify runs: pg_hba must hold exactly the app hosts and this one.
SIDE_EFFECT_HBA_SOURCE = "192.0.2.10"


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


def ipv4(host: testinfra.host.Host, interface: str = "eth0") -> str:
    """The host's IPv4 address (what the scenario's group_vars take from default_ipv4)."""
    addresses = [a for a in host.interface(interface).addresses if ":" not in a]
    assert len(addresses) == 1, f"{interface}: {host.interface(interface).addresses}"
    return addresses[0]


def connect(client: testinfra.host.Host, port: int, host: str = DB) -> str:
    """Connect from `client`: "open", "refused" (a RST: the host answered) or "timeout" (no
    answer: dropped). Anything else (the name does not resolve, no route, no python3) is
    "error: ..." and never passes for "timeout": a probe that could not run proves nothing.
    """
    code = (
        "import socket, sys\n"
        "try:\n"
        f"    socket.create_connection(({host!r}, {port}), timeout=3).close()\n"
        "except ConnectionRefusedError:\n"
        "    sys.exit('refused')\n"
        "except TimeoutError:\n"
        "    sys.exit('timeout')\n"
        "except OSError as error:\n"
        "    sys.exit(f'error: {error!r}')\n"
        "print('open')\n"
    )
    out = client.run(f"python3 -c {shlex.quote(code)}")
    if out.rc == 0 and out.stdout.strip() == "open":
        return "open"
    verdict = out.stderr.strip()
    if out.rc == 1 and verdict in ("refused", "timeout"):
        return verdict
    return f"error: rc={out.rc} stdout={out.stdout!r} stderr={out.stderr!r}"


def superuser_sql(host: testinfra.host.Host, sql: str) -> str:
    """A query as the postgres superuser over the db host's local socket."""
    return host.check_output(f"runuser -u postgres -- psql -XAtc {shlex.quote(sql)}")
