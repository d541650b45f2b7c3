#!/usr/bin/python
# Copyright: fastapi-metal maintainers
# MIT License (see LICENSE)
"""pgBackRest's stanza, check, backup and info, run as postgres, with structured results."""

from __future__ import annotations

DOCUMENTATION = r"""
module: pgbackrest
short_description: Create a pgBackRest stanza, check it, take a backup or read the repository
description:
  - Runs C(pgbackrest) as the C(postgres) user and returns the repository's state read from
    C(pgbackrest info --output=json) (backups with their type, label, start and stop times).
  - C(stanza) creates the stanza when the repository has none (changed), else changes nothing.
  - C(check) verifies that PostgreSQL archives WAL into the repository (fails with pgBackRest's
    reason); it changes nothing but the WAL segment it switches, and in check mode does not run.
  - In check mode before pgBackRest is installed, C(stanza) and C(backup) report a change and
    run nothing.
  - C(backup) takes a backup of O(type); with O(only_if_none), only when the stanza has no
    backup yet (the first converge).
options:
  command:
    description: What to do.
    type: str
    choices: [stanza, check, backup, info]
    required: true
  stanza:
    description: The stanza.
    type: str
    required: true
  type:
    description: The type of backup for O(command=backup).
    type: str
    choices: [full, diff, incr]
    default: full
  only_if_none:
    description: With O(command=backup), back up only when the stanza has no backup yet.
    type: bool
    default: false
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
- name: Ensure the stanza exists
  fastapi_metal.stack.pgbackrest:
    command: stanza
    stanza: main

- name: Take a full backup before migrating
  fastapi_metal.stack.pgbackrest:
    command: backup
    stanza: main
    type: full
  register: backup
"""

RETURN = r"""
backups:
  description: The stanza's backups after the call, oldest first.
  returned: always
  type: list
  elements: dict
  sample: [{label: 20261204-101500F, type: full, start: 1796386500, stop: 1796386512}]
backup:
  description: The backup this call took (O(command=backup) when one was taken).
  returned: when a backup was taken
  type: dict
status:
  description: The stanza's status as pgBackRest reports it (code 0 is ok).
  returned: always
  type: dict
seconds:
  description: How long the command took.
  returned: always
  type: float
"""

import json
import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule


def run(module: AnsibleModule, *args: str) -> tuple[int, str, str]:
    rc, out, err = module.run_command(["runuser", "-u", "postgres", "--", "pgbackrest", *args])
    return rc, out, err


def info(module: AnsibleModule, stanza: str) -> dict[str, Any]:
    rc, out, err = run(module, "--output=json", f"--stanza={stanza}", "info")
    if rc != 0:
        module.fail_json(msg=f"pgbackrest info of stanza {stanza} failed (rc {rc}): {err or out}")
    try:
        data = json.loads(out)
    except ValueError:
        module.fail_json(msg=f"pgbackrest info did not print JSON: {out[:500]}")
    return data[0] if data else {}


def backups(stanza: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "label": b.get("label"),
            "type": b.get("type"),
            "start": b.get("timestamp", {}).get("start"),
            "stop": b.get("timestamp", {}).get("stop"),
            "size": b.get("info", {}).get("size"),
            "repo_size": b.get("info", {}).get("repository", {}).get("delta"),
        }
        for b in stanza.get("backup", [])
    ]


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "command": {"type": "str", "choices": ["stanza", "check", "backup", "info"],
                        "required": True},
            "stanza": {"type": "str", "required": True},
            "type": {"type": "str", "choices": ["full", "diff", "incr"], "default": "full"},
            "only_if_none": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )  # fmt: skip
    p = module.params
    name = p["stanza"]
    t0 = time.monotonic()
    if module.check_mode and not module.get_bin_path("pgbackrest"):
        # A preview before the role installed pgBackRest: the stanza and a backup would be made.
        module.exit_json(
            changed=p["command"] in ("stanza", "backup"), backups=[], status={}, seconds=0.0,
            msg="pgbackrest is not installed yet (check mode)",
        )  # fmt: skip
    state = info(module, name)
    # Code 1: "missing stanza path" - the repository has no stanza yet.
    missing = not state or state.get("status", {}).get("code") == 1
    changed = False
    result: dict[str, Any] = {}
    if p["command"] == "stanza" and missing:
        changed = True
        if not module.check_mode:
            rc, out, err = run(module, f"--stanza={name}", "stanza-create")
            if rc != 0:
                module.fail_json(
                    msg=f"pgbackrest stanza-create {name} failed (rc {rc}): {err or out}"
                )
    elif p["command"] in ("check", "backup") and missing:
        module.fail_json(
            msg=f"pgbackrest: stanza {name} does not exist; create it first (command: stanza)"
        )
    elif p["command"] == "check" and not module.check_mode:  # check switches the WAL segment
        rc, out, err = run(module, f"--stanza={name}", "check")
        if rc != 0:
            module.fail_json(
                msg=f"pgbackrest check of stanza {name} failed (rc {rc}): {err or out}"
            )
    elif p["command"] == "backup" and not (p["only_if_none"] and backups(state)):
        changed = True
        if not module.check_mode:
            before = {b["label"] for b in backups(state)}
            rc, out, err = run(module, f"--stanza={name}", f"--type={p['type']}", "backup")
            if rc != 0:
                module.fail_json(
                    msg=f"pgbackrest {p['type']} backup of {name} failed (rc {rc}): {err or out}"
                )
            state = info(module, name)
            taken = [b for b in backups(state) if b["label"] not in before]
            result["backup"] = taken[-1] if taken else {}
    if changed and not module.check_mode and p["command"] == "stanza":
        state = info(module, name)
    module.exit_json(
        changed=changed,
        backups=backups(state),
        status=state.get("status", {}),
        seconds=round(time.monotonic() - t0, 2),
        **result,
    )


if __name__ == "__main__":
    main()
