# Copyright: fastapi-metal maintainers
# MIT License (see LICENSE)
"""Action plugin of fastapi_metal.stack.release_build: the build runs on the controller."""

from __future__ import annotations

from typing import Any

from ansible.plugins.action import ActionBase
from ansible_collections.fastapi_metal.stack.plugins.plugin_utils.release_build import (
    BuildError,
    build,
)

SPEC: dict[str, Any] = {
    "name": {"type": "str", "required": True},
    "source": {"type": "str", "required": True},
    "cache": {"type": "str", "required": True},
    "constraints": {"type": "str", "default": ""},
    "release": {"type": "str", "default": ""},
    "server": {"type": "list", "elements": "str", "default": []},
    "files": {"type": "list", "elements": "str", "default": []},
    "hosts_python": {"type": "list", "elements": "str", "default": []},
    "hosts_machine": {"type": "list", "elements": "str", "default": []},
    "python": {"type": "str", "default": ""},
}


class ActionModule(ActionBase):  # type: ignore[misc]  # ansible ships no type information
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        _spec, args = self.validate_argument_spec(argument_spec=SPEC)
        try:
            built = build(
                args["name"], args["source"], args["cache"], args["constraints"], args["release"],
                args["server"], args["files"], args["hosts_python"], args["hosts_machine"],
                args["python"],
            )  # fmt: skip
        except BuildError as exc:
            result.update(
                failed=True, msg=f"the release of {args['source']} cannot be built: {exc}"
            )
            return result
        result.update(built)
        return result
