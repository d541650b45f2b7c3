"""The network spec the lab's firewall is probed against (tests/lab/firewall.py), without the
lab: who is admitted where, how `ss -Htln` is read, and what a probe must then see."""

from __future__ import annotations

import pytest

from tests.lab.firewall import (
    APP_PORTS,
    EDGE_EXPORTERS,
    JOURNAL,
    NODE_EXPORTER,
    POLICY_PORTS,
    POSTGRES_EXPORTER,
    POSTGRESQL,
    SSH,
    Source,
    admitted,
    expected,
    lab_source,
    listening,
)
from tests.lab.topology import ADDRESSES

CONTROLLER = Source("controller", "10.89.50.1")
STRANGER = Source("acme", "10.89.50.5", container="acme")


def open_ports(source: Source, host: str) -> set[int]:
    return {port for port in POLICY_PORTS if admitted(source, host, port)}


def test_a_stranger_reaches_the_edges_http_and_https_only() -> None:
    assert open_ports(STRANGER, "lb1") == {80, 443}
    for host in ("app1", "app2", "db1", "mon1"):
        assert open_ports(STRANGER, host) == set(), host


def test_the_controller_reaches_ssh_and_the_public_edge_only() -> None:
    assert open_ports(CONTROLLER, "lb1") == {SSH, 80, 443}
    for host in ("app1", "db1", "mon1"):
        assert open_ports(CONTROLLER, host) == {SSH}, host


def test_each_group_reaches_what_its_role_needs_and_nothing_more() -> None:
    lb, app, db, mon = (lab_source(h) for h in ("lb1", "app1", "db1", "mon1"))
    assert open_ports(lb, "app2") == set(APP_PORTS)
    assert open_ports(lb, "db1") == set()  # not 5432, not the PostgreSQL exporter
    assert open_ports(lb, "mon1") == {JOURNAL}
    assert open_ports(app, "db1") == {POSTGRESQL}
    assert open_ports(app, "app2") == set()  # an app host is not an lb
    assert open_ports(app, "lb1") == {80, 443}
    assert open_ports(db, "mon1") == {JOURNAL}
    assert open_ports(mon, "db1") == {NODE_EXPORTER, POSTGRES_EXPORTER}
    assert open_ports(mon, "lb1") == {80, 443, NODE_EXPORTER} | EDGE_EXPORTERS
    assert open_ports(mon, "app1") == {NODE_EXPORTER} | APP_PORTS


SS = """\
LISTEN 0      4096         0.0.0.0:9100       0.0.0.0:*
LISTEN 0      244      10.89.50.20:5432       0.0.0.0:*
LISTEN 0      244        127.0.0.1:5432       0.0.0.0:*
LISTEN 0      4096       127.0.0.1:9090       0.0.0.0:*
LISTEN 0      4096    127.0.0.53%lo:53        0.0.0.0:*
LISTEN 0      128             [::]:22            [::]:*
LISTEN 0      4096               *:9187             *:*
LISTEN 0      4096           [::1]:9093          [::]:*
"""


def test_ss_is_read_as_ports_on_the_hosts_address_and_ports_elsewhere() -> None:
    assert listening(SS, "10.89.50.20") == ({9100, 5432, 22, 9187}, {9090, 53, 9093})
    # Another host's address is "elsewhere".
    assert listening(SS, "10.89.50.31") == ({9100, 22, 9187}, {5432, 9090, 53, 9093})
    with pytest.raises(ValueError):
        listening("LISTEN 0 1 nonsense:80 0.0.0.0:*\n", "10.89.50.20")


def test_an_admitted_port_is_open_where_it_listens_and_refused_where_it_does_not() -> None:
    db = ADDRESSES["db1"]
    mon = lab_source("mon1")
    targets = [f"{db}:{NODE_EXPORTER}", f"{db}:{POSTGRES_EXPORTER}", f"{db}:9090", f"{db}:22"]
    listened = {"db1": {NODE_EXPORTER, 22}}
    assert expected(mon, listened, targets) == {
        f"{db}:{NODE_EXPORTER}": "open",
        f"{db}:{POSTGRES_EXPORTER}": "refused",  # admitted, but nothing listens there
        f"{db}:9090": "timeout",  # no rule: dropped
        f"{db}:22": "timeout",  # SSH from the controller only
    }
