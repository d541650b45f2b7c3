# Copyright: fastapi-metal maintainers
# MIT License (see LICENSE)
"""The filters that name hosts to each other, written once for every role: a group's
addresses (peers in firewall rules, pg_hba, trusted proxies) and the string an nginx upstream
names an app server by (what the nginx role lists and what a drain of that host looks for:
the two must match byte for byte)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError


def address_of(host: str, hostvars: Mapping[str, Any]) -> str:
    """A host's address: its ansible_host, else its inventory name."""
    variables = hostvars.get(host, {})
    value = variables.get("ansible_host") if isinstance(variables, Mapping) else None
    return str(value) if value not in (None, "") else str(host)


def addresses(hosts: Iterable[str] | None, hostvars: Mapping[str, Any]) -> list[str]:
    """``groups['app'] | fastapi_metal.stack.addresses(hostvars)``: each host's address."""
    if isinstance(hosts, (str, Mapping)):
        raise AnsibleFilterError(f"addresses: expected a list of inventory hosts; got {hosts!r}")
    return [address_of(str(host), hostvars) for host in hosts or []]


def upstream_server(address: str, port: Any, unix: str = "") -> str:
    """``ADDRESS | fastapi_metal.stack.upstream_server(PORT, UNIX)``: "unix:/path" when UNIX
    is set, else "address:port" ("[address]:port" for an IPv6 address)."""
    if unix:
        return f"unix:{unix}"
    text = str(address)
    try:
        number = int(port)
    except (TypeError, ValueError):
        number = 0
    if not text or not 0 < number < 65536:
        raise AnsibleFilterError(
            f"upstream_server: expected an address and a TCP port 1-65535 (e.g. 10.0.0.31, 8000); "
            f"got {text!r}, {port!r}"
        )
    if ":" in text and not text.startswith("["):
        text = f"[{text}]"
    return f"{text}:{number}"


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"addresses": addresses, "upstream_server": upstream_server}
