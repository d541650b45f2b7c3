# Copyright: fastapi-metal maintainers
# MIT License (see LICENSE)
"""The filter fastapi_metal.stack.systemd_env: variables as an environment file systemd reads
back byte for byte (the quoting rules are in plugin_utils/systemd_env.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.fastapi_metal.stack.plugins.plugin_utils.systemd_env import (
    env_problem,
    quote,
)


def systemd_env(variables: Mapping[str, Any] | None, name: str = "environment") -> str:
    """``{'A': 'x $y'} | fastapi_metal.stack.systemd_env`` -> ``A="x \\$y"\\n`` (sorted by key)."""
    if variables is None:
        return ""
    if not isinstance(variables, Mapping):
        raise AnsibleFilterError(
            f"systemd_env: {name}: expected a mapping; got {type(variables).__name__}"
        )
    lines = []
    for key in sorted(variables, key=str):
        problem = env_problem(key, variables[key])
        if problem:
            raise AnsibleFilterError(f"systemd_env: {name}: {problem}")
        lines.append(f"{key}={quote(variables[key])}\n")
    return "".join(lines)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"systemd_env": systemd_env}
