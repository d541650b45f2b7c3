"""The lab as its inventory describes it (inventories/lab): each host's address and the lab's
own variables, read from there so that no test spells them again."""

from __future__ import annotations

from typing import Any

import yaml

from tests.lab.ansible_run import INVENTORY


def _addresses(node: dict[str, Any], groups: dict[str, list[str]], group: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for host, host_vars in (node.get("hosts") or {}).items():
        out[host] = str((host_vars or {}).get("ansible_host", host))
        groups.setdefault(group, []).append(host)
    for name, child in (node.get("children") or {}).items():
        out.update(_addresses(child or {}, groups, name))
    return out


GROUPS: dict[str, list[str]] = {}
ADDRESSES: dict[str, str] = _addresses(
    yaml.safe_load((INVENTORY / "hosts.yml").read_text())["all"], GROUPS, "all"
)
LAB_VARS: dict[str, Any] = yaml.safe_load((INVENTORY / "group_vars/all.yml").read_text())
LAB_DB_PASSWORD: str = LAB_VARS["lab_db_password"]
LB_IP = ADDRESSES[GROUPS["lb"][0]]
DB_IP = ADDRESSES[GROUPS["db"][0]]
APP_HOSTS = {host: ADDRESSES[host] for host in GROUPS["app"]}
