"""plugins/filter/network.py: a group's addresses, and the upstream string both the nginx
role and the fastapi_app role's drain spell an app server by."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.fastapi_metal.stack.plugins.filter.network import (
    FilterModule,
    addresses,
    upstream_server,
)

HOSTVARS = {"app1": {"ansible_host": "10.0.0.31"}, "app2": {}, "app3": {"ansible_host": ""}}


def test_addresses_are_ansible_host_else_the_inventory_name() -> None:
    assert addresses(["app1", "app2", "app3", "unknown"], HOSTVARS) == [
        "10.0.0.31",
        "app2",
        "app3",
        "unknown",
    ]
    assert addresses([], HOSTVARS) == []
    assert addresses(None, HOSTVARS) == []


def test_addresses_refuses_a_string() -> None:
    with pytest.raises(AnsibleFilterError, match="expected a list of inventory hosts"):
        addresses("app1", HOSTVARS)


@pytest.mark.parametrize(
    ("address", "port", "unix", "expected"),
    [
        ("10.0.0.31", 8000, "", "10.0.0.31:8000"),
        ("10.0.0.31", "8000", "", "10.0.0.31:8000"),
        ("app1.internal", 9000, "", "app1.internal:9000"),
        ("2001:db8::31", 8000, "", "[2001:db8::31]:8000"),
        ("[2001:db8::31]", 8000, "", "[2001:db8::31]:8000"),
        ("10.0.0.31", 8000, "/run/notes/notes.sock", "unix:/run/notes/notes.sock"),
    ],
)
def test_upstream_server(address: str, port: object, unix: str, expected: str) -> None:
    assert upstream_server(address, port, unix) == expected


@pytest.mark.parametrize(("address", "port"), [("10.0.0.31", 0), ("10.0.0.31", "http"), ("", 8000)])
def test_upstream_server_refuses_what_nginx_would(address: str, port: object) -> None:
    with pytest.raises(AnsibleFilterError, match="expected an address and a TCP port"):
        upstream_server(address, port)


def test_the_filters_are_exported_by_name() -> None:
    assert set(FilterModule().filters()) == {"addresses", "upstream_server"}
