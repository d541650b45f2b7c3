#!/usr/bin/python
# Copyright: fastapi-metal maintainers
# MIT License (see LICENSE)
"""Append one JSON line to a deploy audit log."""

from __future__ import annotations

DOCUMENTATION = r"""
module: deploy_audit
short_description: Append a record of a deploy or rollback to an audit log, one JSON line per record
description:
  - Appends O(record) as one JSON line (keys sorted), creating the log and its directory.
  - A log is history, so the module never rewrites a line and always reports a change (in
    check mode it writes nothing).
options:
  path:
    description: The audit log (JSON lines).
    type: path
    required: true
  record:
    description: What to record (deploy id, action, who, releases, outcome, message...).
    type: dict
    required: true
extends_documentation_fragment:
  - fastapi_metal.stack.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
author: fastapi-metal maintainers (@fastapi-metal)
"""

EXAMPLES = r"""
- name: Record the deploy
  fastapi_metal.stack.deploy_audit:
    path: /var/log/fastapi-metal/notes-deploys.jsonl
    record: {id: "{{ run_id }}", action: deploy, to_release: 1.4.0-ab12cd34, outcome: success}
"""

RETURN = r"""
line:
  description: The line appended (or that would be, in check mode).
  returned: always
  type: str
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule


def append(path: str, line: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", mode=0o750, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "record": {"type": "dict", "required": True},
        },
        supports_check_mode=True,
    )
    line = json.dumps(module.params["record"], sort_keys=True, default=str)
    if "\n" in line:  # json.dumps escapes newlines; kept as a guard for the one-line promise
        module.fail_json(msg="a record must fit on one line")
    if not module.check_mode:
        append(module.params["path"], line)
    module.exit_json(changed=True, line=line)


if __name__ == "__main__":
    main()
