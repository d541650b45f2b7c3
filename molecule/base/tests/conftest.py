"""Helpers shared by the base scenario's tests: peer hosts, listeners and a port probe."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import testinfra

from tests.helpers.probe import probe_command, probe_problems

LB = "fm-svc-base-lb"
APP = "fm-svc-base-app"
OTHER = "fm-svc-base-other"


def get(name: str) -> testinfra.host.Host:
    return testinfra.get_host(f"podman://{name}")


@pytest.fixture(scope="session")
def lb() -> testinfra.host.Host:
    return get(LB)


@pytest.fixture(scope="session")
def app() -> testinfra.host.Host:
    return get(APP)


@pytest.fixture(scope="session")
def other() -> testinfra.host.Host:
    return get(OTHER)


def journal(host: testinfra.host.Host, unit: str) -> str:
    return host.run(f"journalctl -u {shlex.quote(unit)} --no-pager -n 50").stdout


def probe(client: testinfra.host.Host, *targets: str, timeout: float = 1.5) -> dict[str, str]:
    """What `client` sees when it connects to each "host:port" (tests/helpers/probe.py).

    A "timeout" proves a port is dropped only if the same probe, from the same client, saw
    another port open: every call must include a target that is open (its positive
    control), and a name that did not resolve fails here, never passes as "dropped".
    """
    out = client.run(probe_command(targets, timeout))
    assert out.rc == 0, out.stderr
    seen: dict[str, str] = json.loads(out.stdout)
    problems = probe_problems(seen, targets)
    if problems:
        pytest.fail(f"{client.backend.hostname} could not probe: {problems}")
    return seen


@contextmanager
def listening(host: testinfra.host.Host, *ports: int) -> Iterator[None]:
    """Throwaway TCP listeners (transient units) so that "open" can be told from "dropped"."""
    units = [f"fm-probe-{port}" for port in ports]
    try:
        for unit, port in zip(units, ports, strict=True):
            host.run_test(
                f"systemd-run --unit={unit} --collect python3 -m http.server {port} --bind 0.0.0.0"
            )
        deadline = time.monotonic() + 10
        while not all(host.socket(f"tcp://0.0.0.0:{p}").is_listening for p in ports):
            assert time.monotonic() < deadline, f"listeners on {ports} did not start"
            time.sleep(0.2)
        yield
    finally:
        host.run("systemctl stop " + " ".join(units))
