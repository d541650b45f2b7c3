"""Helpers shared by the base scenario's tests: peer hosts, listeners and a port probe."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import testinfra

LB = "fm-svc-base-lb"
APP = "fm-svc-base-app"
OTHER = "fm-svc-base-other"

# Runs on the client container: connects to every host:port at once and reports
# "open", "refused" (a RST: the firewall let the packet in) or "timeout" (dropped).
PROBE = r"""
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor

def probe(target):
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=float(sys.argv[1])).close()
        return "open"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "timeout"

targets = sys.argv[2:]
with ThreadPoolExecutor(len(targets)) as pool:
    print(json.dumps(dict(zip(targets, pool.map(probe, targets)))))
"""


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
    """What `client` sees when it connects to each "host:port"."""
    cmd = ["python3", "-c", PROBE, str(timeout), *targets]
    out = client.run(shlex.join(cmd))
    assert out.rc == 0, out.stderr
    return json.loads(out.stdout)


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
