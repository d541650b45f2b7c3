# Copyright: fastapi-metal maintainers
# MIT License (see LICENSE)
"""The filter fastapi_metal.stack.apps: the apps a play deploys, from the inventory's
fastapi_metal_apps list (several apps on the same hosts) or, when it lists none, the one app
the fastapi_app_* variables describe."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError


def apps(entries: Any, only: str = "") -> list[dict[str, Any]]:
    """``fastapi_metal_apps | default(none) | fastapi_metal.stack.apps(ONLY)``: every entry,
    or the one named ONLY; ``[{}]`` (one app, the role's own variables) when there are none."""
    if entries in (None, "", []):
        if only:
            raise AnsibleFilterError(
                f"fastapi_metal_app: expected the name of an app of fastapi_metal_apps; got "
                f"'{only}', but the inventory lists no apps (fastapi_metal_apps is not set)"
            )
        return [{}]
    if isinstance(entries, (str, Mapping)) or not isinstance(entries, list):
        raise AnsibleFilterError(
            "fastapi_metal_apps: expected a list of apps, e.g. [{fastapi_app_name: notes, "
            f"fastapi_app_port: 8000}}]; got {type(entries).__name__}"
        )
    names = [e.get("fastapi_app_name") if isinstance(e, Mapping) else None for e in entries]
    if not only:
        return [dict(e) for e in entries]
    if only not in names:
        raise AnsibleFilterError(
            f"fastapi_metal_app: expected the name of an app of fastapi_metal_apps "
            f"({', '.join(map(str, names))}); got '{only}'"
        )
    return [dict(entries[names.index(only)])]


def app_databases(entries: Any) -> list[dict[str, Any]]:
    """``fastapi_metal_apps | fastapi_metal.stack.app_databases``: the database each app's
    fastapi_app_database asks for, as the postgresql role takes it ({name, owner, password});
    name and owner default to the app's name, like the fastapi_app role's."""
    out = []
    for entry in entries or []:
        database = entry.get("fastapi_app_database") if isinstance(entry, Mapping) else None
        if not isinstance(database, Mapping) or not database:
            continue
        app = entry.get("fastapi_app_name", "app")
        out.append({
            "name": database.get("name", app),
            "owner": database.get("user", app),
            "password": database.get("password", ""),
        })  # fmt: skip
    return out


# What the monitoring role reads of an app, and the fastapi_app variable it comes from.
_MONITORED = {
    "name": "fastapi_app_name",
    "port": "fastapi_app_port",
    "health_path": "fastapi_app_health_path",
    "live_path": "fastapi_app_rollback_health_path",
    "metrics_path": "fastapi_app_metrics_path",
    "server_names": "nginx_server_names",
}


def monitored_apps(entries: Any, fallback: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``fastapi_metal_apps | default(none) | fastapi_metal.stack.monitored_apps(FALLBACK)``:
    per app, what Prometheus needs to watch it: name, port, the path its liveness answers at
    (the rollback health path, else the health path), its metrics path ('' when it has none)
    and the names the edge serves it at. FALLBACK holds the values of the fastapi_app_* and
    nginx_server_names variables for an app whose entry does not set them (or the one app of
    an inventory without fastapi_metal_apps)."""
    out = []
    for entry in apps(entries):
        values = {key: entry.get(var, fallback.get(var)) for key, var in _MONITORED.items()}
        health = str(values["health_path"] or "/health")
        # An entry's own health path is its liveness path too, unless it names one.
        live = entry.get(_MONITORED["live_path"]) or (
            None if _MONITORED["health_path"] in entry else fallback.get(_MONITORED["live_path"])
        )
        names = values["server_names"] or []
        out.append({
            "name": str(values["name"] or "app"),
            "port": int(values["port"] or 8000),
            "live_path": str(live or health),
            "metrics_path": str(values["metrics_path"] or ""),
            "server_names": [str(n) for n in ([names] if isinstance(names, str) else names)],
        })  # fmt: skip
    return out


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"apps": apps, "app_databases": app_databases, "monitored_apps": monitored_apps}
