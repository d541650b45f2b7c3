"""Who may connect to which port of the lab, as docs/security.md ("Network") states it, and what
a TCP probe must then see: the expectation the lab's firewall is probed against.

Stated per group, from the documentation, not derived from the base role's rules: SSH from
``base_firewall_ssh_sources`` (the controller) only; 80 and 443 on ``lb`` from anyone; the apps'
ports on ``app`` from ``lb`` and ``monitoring``; 5432 on ``db`` from ``app``; each exporter
(node on every host, PostgreSQL's on ``db``, nginx's and the edge log's on ``lb``) from
``monitoring``; the central journal's port on ``monitoring`` from every inventory host. Any
other port is dropped for everyone (a "timeout"), whatever listens there. A port a source may
reach answers "open" where the host listens on its address (or on every address) and
"refused" where it does not (e.g. a service on loopback only).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from tests.helpers.probe import probe_command, probe_problems
from tests.helpers.role_defaults import role_defaults
from tests.lab.ansible_run import lab_exec
from tests.lab.topology import ADDRESSES, GROUPS, LAB_VARS

SSH = 22
POSTGRESQL = 5432
HTTP = frozenset({80, 443})
_MONITORING = role_defaults("monitoring")
NODE_EXPORTER = int(_MONITORING["monitoring_node_exporter_port"])
POSTGRES_EXPORTER = int(_MONITORING["monitoring_postgres_exporter_port"])
EDGE_EXPORTERS = frozenset(
    int(_MONITORING[f"monitoring_{name}_port"]) for name in ("nginx_exporter", "edge_log")
)
JOURNAL = int(_MONITORING["monitoring_journal_port"])
APP_PORTS = frozenset(int(app["fastapi_app_port"]) for app in LAB_VARS["fastapi_metal_apps"])
# Every port some rule of the spec is about: probed on every host, so that a rule applied to
# the wrong group (5432 opened on an app host) is seen as well.
POLICY_PORTS = frozenset(
    {SSH, POSTGRESQL, NODE_EXPORTER, POSTGRES_EXPORTER, JOURNAL} | HTTP | EDGE_EXPORTERS | APP_PORTS
)
SSH_SOURCES = frozenset(str(s) for s in LAB_VARS["base_firewall_ssh_sources"])


@dataclass(frozen=True)
class Source:
    """Where a probe runs: an inventory host (with its groups), a container of the lab network
    in no group (``acme``), or the controller (``container`` None: the probe runs here)."""

    name: str
    address: str
    groups: frozenset[str] = frozenset()
    container: str | None = None


def lab_source(name: str) -> Source:
    """An inventory host as a probe's source."""
    return Source(name, ADDRESSES[name], host_groups(name), container=name)


def stranger(container: str) -> Source:
    """A container on the lab network in no group, with the address it has there."""
    address = lab_exec(container, "hostname -I").stdout.split()[0]
    assert address not in ADDRESSES.values(), f"{container} has an inventory host's address"
    return Source(container, address, container=container)


def controller() -> Source:
    """The machine the tests run on, as the lab hosts see it: their default gateway."""
    route = lab_exec(next(iter(ADDRESSES)), "ip -4 route show default").stdout.split()
    return Source("controller", route[route.index("via") + 1])


def host_groups(host: str) -> frozenset[str]:
    return frozenset(g for g, hosts in GROUPS.items() if host in hosts and g != "all")


def admitted(source: Source, host: str, port: int) -> bool:
    """Whether the spec lets ``source`` open a connection to ``port`` on the inventory ``host``."""
    groups, src = host_groups(host), source.groups
    if port == SSH:
        return source.address in SSH_SOURCES
    rules = [
        ("lb" in groups and port in HTTP, True),
        ("app" in groups and port in APP_PORTS, bool(src & {"lb", "monitoring"})),
        ("db" in groups and port == POSTGRESQL, "app" in src),
        ("db" in groups and port == POSTGRES_EXPORTER, "monitoring" in src),
        ("lb" in groups and port in EDGE_EXPORTERS, "monitoring" in src),
        (port == NODE_EXPORTER, "monitoring" in src),
        ("monitoring" in groups and port == JOURNAL, source.address in ADDRESSES.values()),
    ]
    return any(applies and allowed for applies, allowed in rules)


def listening(ss_output: str, address: str) -> tuple[set[int], set[int]]:
    """From ``ss -Htln``: the TCP ports listening on ``address`` (or on every address), and
    those listening only elsewhere (loopback)."""
    reachable: set[int] = set()
    others: set[int] = set()
    for line in ss_output.splitlines():
        if not line.strip():
            continue
        local = line.split()[3]
        ip, _colon, port = local.rpartition(":")
        ip = ip.strip("[]").split("%", 1)[0]
        if ip in ("*", "0.0.0.0", "::", address, f"::ffff:{address}"):
            reachable.add(int(port))
        else:
            ipaddress.ip_address(ip)  # a form this parser does not know fails here
            others.add(int(port))
    return reachable, others - reachable


def expected(
    source: Source, listened: Mapping[str, set[int]], targets: Iterable[str]
) -> dict[str, str]:
    """The verdict map a probe of ``targets`` (address:port of inventory hosts) from ``source``
    must see, given the ports each host listens on its address (``listened``, by host)."""
    by_address = {address: host for host, address in ADDRESSES.items()}
    out = {}
    for target in targets:
        address, port_text = target.rsplit(":", 1)
        host, port = by_address[address], int(port_text)
        if not admitted(source, host, port):
            out[target] = "timeout"
        else:
            out[target] = "open" if port in listened[host] else "refused"
    return out


def probe(source: Source, targets: Sequence[str]) -> dict[str, str]:
    """Probe ``targets`` from ``source``. An AssertionError when a verdict is no firewall
    verdict (unresolved, unreachable, another error) or nothing was open: tests/helpers/probe.py."""
    command = probe_command(targets)
    if source.container is None:
        out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=True)
    else:
        out = lab_exec(source.container, command)
    seen: dict[str, str] = json.loads(out.stdout)
    problems = probe_problems(seen, targets)
    assert not problems, f"{source.name} probing {len(targets)} targets: " + "; ".join(problems)
    return seen


@dataclass(frozen=True)
class Listening:
    """Per inventory host: the TCP ports it listens on at its address, and the targets to
    probe there (everything it listens on, loopback included, and every port of the spec)."""

    ports: dict[str, set[int]]
    targets: dict[str, list[str]]


def listening_on_every_host() -> Listening:
    ports, targets = {}, {}
    for host, address in ADDRESSES.items():
        reachable, elsewhere = listening(lab_exec(host, "ss -Htln").stdout, address)
        assert reachable, f"{host}: nothing listens on {address} (ss -Htln read nothing?)"
        ports[host] = reachable
        probed = sorted(reachable | elsewhere | POLICY_PORTS)
        targets[host] = [f"{address}:{port}" for port in probed]
    return Listening(ports, targets)


def firewall_differences(
    source: Source, lab: Listening, hosts: Iterable[str] | None = None
) -> dict[str, tuple[str, str]]:
    """Probe every port of ``hosts`` (but the source's own) from ``source``: the targets whose
    verdict is not the spec's, as {target: (expected, seen)}; empty when every one is. Every
    lab host by default."""
    hosts = ADDRESSES if hosts is None else hosts
    targets = [t for host in hosts if host != source.name for t in lab.targets[host]]
    seen = probe(source, targets)
    want = expected(source, lab.ports, targets)
    return {t: (want[t], seen.get(t, "")) for t in targets if seen.get(t) != want[t]}
