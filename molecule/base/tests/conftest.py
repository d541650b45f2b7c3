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

# Runs on the client container: resolves each name first, then connects to every
# host:port at once. "open"; "refused" (a RST: the firewall let the packet in); "timeout"
# (no answer at all: dropped). Anything else is not a firewall verdict and is named as what
# it is: "unresolved" (the lab's DNS), "unreachable" (no route), "error: ...".
PROBE = r"""
import errno, json, socket, sys
from concurrent.futures import ThreadPoolExecutor

def probe(target):
    host, port = target.rsplit(":", 1)
    try:
        addr = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)[0][4]
    except socket.gaierror as e:
        return f"unresolved: {e}"
    try:
        socket.create_connection(addr, timeout=float(sys.argv[1])).close()
        return "open"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    except OSError as e:
        if e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return f"unreachable: {e}"
        return f"error: {e}"

targets = sys.argv[2:]
with ThreadPoolExecutor(len(targets)) as pool:
    print(json.dumps(dict(zip(targets, pool.map(probe, targets)))))
"""
VERDICTS = {"open", "refused", "timeout"}


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
    """What `client` sees when it connects to each "host:port".

    A "timeout" proves a port is dropped only if the same probe, from the same client, saw
    another port open: every call must include a target that is open (its positive
    control), and a name that did not resolve fails here, never passes as "dropped".
    """
    cmd = ["python3", "-c", PROBE, str(timeout), *targets]
    out = client.run(shlex.join(cmd))
    assert out.rc == 0, out.stderr
    seen: dict[str, str] = json.loads(out.stdout)
    broken = {t: v for t, v in seen.items() if v not in VERDICTS}
    if broken:
        pytest.fail(f"{client.backend.hostname} could not probe (no firewall verdict): {broken}")
    if "open" not in seen.values():
        pytest.fail(
            f"{client.backend.hostname} saw nothing open among {targets}: without a positive "
            "control a timeout proves nothing"
        )
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
