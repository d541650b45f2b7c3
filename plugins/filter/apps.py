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


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"apps": apps, "app_databases": app_databases}
