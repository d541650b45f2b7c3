"""The lab as its inventory describes it (inventories/lab): each host's address and the lab's
own variables, read from there so that no test spells them again."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from functools import cache
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


def _group_vars() -> dict[str, dict[str, Any]]:
    """Every group's variables, as its file (or directory of files) in group_vars holds them."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted((INVENTORY / "group_vars").iterdir()):
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        for file in (f for f in files if f.suffix in (".yml", ".yaml")):
            out.setdefault(path.name.split(".")[0], {}).update(
                yaml.safe_load(file.read_text()) or {}
            )
    return out


GROUP_VARS: dict[str, dict[str, Any]] = _group_vars()
LAB_VARS: dict[str, Any] = GROUP_VARS["all"]
LAB_DB_PASSWORD: str = LAB_VARS["lab_db_password"]
LB_IP = ADDRESSES[GROUPS["lb"][0]]
DB_IP = ADDRESSES[GROUPS["db"][0]]
APP_HOSTS = {host: ADDRESSES[host] for host in GROUPS["app"]}


# --- the lab's secrets -------------------------------------------------------------------------

# A variable holds a secret when its name says so; everything under it is secret (a dict of
# secret env values, a database's settings ...).
SECRET_NAME = re.compile(r"pass|secret|token|cipher", re.I)
# Names that match but hold no secret: fastapi_app_database_env maps env names to the *names*
# of the database's fields ({POSTGRES_PASSWORD: password}); the password is in
# fastapi_app_database, which is scanned.
NOT_SECRET = frozenset({"fastapi_app_database_env"})
_REFERENCE = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def resolve(value: str, scope: Mapping[str, Any], seen: tuple[str, ...] = ()) -> str:
    """``value`` with a whole-value "{{ name }}" reference replaced by that variable (in turn
    resolved). Any other template cannot be known without Ansible: a ValueError, so that a
    secret never silently drops out of the scans."""
    m = _REFERENCE.fullmatch(value.strip())
    if m:
        name = m[1]
        if name in seen or name not in scope:
            raise ValueError(f"{value!r}: {name} is undefined or refers to itself")
        return resolve(str(scope[name]), scope, (*seen, name))
    if "{{" in value or "{%" in value:
        raise ValueError(f"{value!r}: a template the tests cannot resolve")
    return value


def _leaves(node: Any) -> Iterator[Any]:
    if isinstance(node, Mapping):
        for value in node.values():
            yield from _leaves(value)
    elif isinstance(node, list):
        for value in node:
            yield from _leaves(value)
    else:
        yield node


def secret_values(variables: Mapping[str, Any], scope: Mapping[str, Any]) -> set[str]:
    """Every value of ``variables`` (at any depth) under a name that says "secret", with
    "{{ lab_... }}" references resolved in ``scope``. A value that is not a string of at least
    8 characters is a ValueError: it could not be told apart from ordinary log text."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if str(key) in NOT_SECRET:
                    continue
                if SECRET_NAME.search(str(key)):
                    for leaf in _leaves(value):
                        if leaf is None or leaf == "":
                            continue  # unset: nothing to leak
                        if not isinstance(leaf, str):
                            raise ValueError(f"{key}: {leaf!r} is not a string secret")
                        secret = resolve(leaf, scope)
                        if len(secret) < 8:
                            raise ValueError(f"{key}: a secret under 8 characters")
                        found.add(secret)
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(variables)
    return found


@cache
def lab_secrets() -> tuple[str, ...]:
    """The secrets of the lab inventory (every group's variables, references resolved in that
    group's view: all.yml overridden by the group's own file): what the "no secret in the
    output or any log" tests look for. Sorted, so that a failure can name one by position."""
    found: set[str] = set()
    for variables in GROUP_VARS.values():
        found |= secret_values(variables, {**LAB_VARS, **variables})
    if not found:
        raise ValueError("no secret found in the lab inventory: the scans would look for nothing")
    return tuple(sorted(found))
