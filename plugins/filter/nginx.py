# Copyright: fastapi-metal maintainers
# MIT License (see LICENSE)
"""The filter fastapi_metal.stack.nginx_sites: the nginx role's sites, every part filled in
(upstream name, certificate paths, locations) and checked against each other."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.fastapi_metal.stack.plugins.plugin_utils.inventory_rules import FORMS

# An upstream server as the inventory's nginx_upstream_servers must spell it.
SERVER = next(f for f in FORMS if f.var == "nginx_upstream_servers")

NAME = r"^[a-z][a-z0-9_-]{0,31}$"
EXAMPLE = "e.g. [{name: notes, server_names: [notes.example.com], servers: ['10.0.0.31:8000']}]"


def nginx_sites(
    sites: Any, locations: list[Any], exempt: list[Any], private: list[Any]
) -> list[dict[str, Any]]:
    """``nginx_sites | fastapi_metal.stack.nginx_sites(nginx_locations, ...)``: each site with
    upstream (fastapi_metal_<name>), certificate and certificate_key (under
    /etc/nginx/tls/<first server name>/ unless set), locations, rate_limit_exempt_locations and
    private_locations (the role's lists unless set)."""
    if isinstance(sites, (str, Mapping)) or not isinstance(sites, list) or not sites:
        raise AnsibleFilterError(
            f"nginx_sites: expected a non-empty list of sites, {EXAMPLE}; got {sites!r}"
        )
    out: list[dict[str, Any]] = []
    owner: dict[str, str] = {}
    for site in sites:
        name = str(site.get("name", "")) if isinstance(site, Mapping) else ""
        if not re.match(NAME, name):
            raise AnsibleFilterError(
                f"nginx_sites: expected each site to have a name (lowercase letters, digits, - "
                f"and _, e.g. notes: it names the upstream); got {site!r}"
            )
        names = site.get("server_names") or []
        servers = site.get("servers") or []
        if isinstance(names, str) or not names:
            raise AnsibleFilterError(
                f"nginx_sites: expected the names site {name} answers to (server_names, e.g. "
                f"[{name}.example.com]; for an app of fastapi_metal_apps its nginx_server_names); "
                f"got {names!r}"
            )
        if isinstance(servers, str) or not servers:
            raise AnsibleFilterError(
                f"nginx_sites: expected the upstream servers of site {name} (servers, e.g. "
                f"['10.0.0.31:8000']); got {servers!r} (no host in the 'app' group?)"
            )
        bad = [str(server) for server in servers if not re.match(SERVER.match, str(server))]
        if bad:
            raise AnsibleFilterError(
                f"nginx_sites: expected the servers of site {name} as {SERVER.expect}; "
                f"got {', '.join(bad)}"
            )
        for server_name in names:
            if server_name in owner:
                raise AnsibleFilterError(
                    f"nginx_sites: expected each server name in one site; {server_name} is in "
                    f"{owner[server_name]} and {name}"
                )
            owner[server_name] = name
        if name in [s["name"] for s in out]:
            raise AnsibleFilterError(f"nginx_sites: expected each site name once; {name} is twice")
        tls = f"/etc/nginx/tls/{names[0]}"
        out.append({
            "locations": locations,
            "rate_limit_exempt_locations": exempt,
            "private_locations": private,
            **site,
            "name": name,
            "upstream": f"fastapi_metal_{name.replace('-', '_')}",
            "certificate": site.get("certificate") or f"{tls}/fullchain.pem",
            "certificate_key": site.get("certificate_key") or f"{tls}/privkey.pem",
        })  # fmt: skip
    return out


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"nginx_sites": nginx_sites}
