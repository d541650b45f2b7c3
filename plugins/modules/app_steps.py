#!/usr/bin/python
# Copyright: fastapi-metal maintainers
# MIT License (see LICENSE)
"""Run a release's steps (hooks) as the app user, with the environment systemd gives the app."""

from __future__ import annotations

DOCUMENTATION = r"""
module: app_steps
short_description: Run a release's steps as the app user through a shell, with the app's environment
description:
  - Runs the commands of each of O(steps) in turn through C(/bin/sh -e) as O(user), in the release
    directory O(chdir), in a transient systemd unit whose C(EnvironmentFile=) is the release's
    environment file, so a step sees exactly the bytes the service sees (no shell ever parses
    the file, and no root shell ever runs the command).
  - Each command is written to a script file next to the environment file first (readable by
    the app's group, never by others), since systemd would expand C($) in a command line; a
    file goes through untouched.
  - Stops at the first command that fails, naming the step, the command, its exit status and
    the end of its output; later steps do not run.
  - A step runs at the niceness the module runs at.
  - A command reports a change unless the last JSON line it prints holds C(changed) false
    (what the reference app's migration prints); the last JSON object each step printed is
    returned in RV(reports).
options:
  steps:
    description: The steps, in order.
    type: list
    elements: dict
    required: true
    suboptions:
      point:
        description: The step's name in messages and script files (before_migrate, migrate, ...).
        type: str
        required: true
      commands:
        description: Shell commands, run in turn; each may span lines (a small script).
        type: list
        elements: str
        default: []
  chdir:
    description: The working directory (the release directory).
    type: path
    required: true
  env_file:
    description: The release's environment file, read as the service's C(EnvironmentFile=).
    type: path
    required: true
  script_dir:
    description: Directory the scripts are written to (owned by root, readable by O(group)).
    type: path
    required: true
  user:
    description: The account the steps run as.
    type: str
    required: true
  group:
    description: The account's group.
    type: str
    required: true
  environment:
    description:
      - Variables set before the environment file is read (C(Environment=)); the file wins, as
        it does in the service.
    type: dict
    default: {}
  timeout:
    description: Seconds a command may run before systemd stops it (0 = no limit).
    type: int
    default: 0
  read_only:
    description: The commands change nothing (a migration plan); they run in check mode too.
    type: bool
    default: false
extends_documentation_fragment:
  - fastapi_metal.stack.attributes
attributes:
  check_mode:
    support: partial
    details: Runs nothing unless O(read_only) is set.
  diff_mode:
    support: none
author: fastapi-metal maintainers (@fastapi-metal)
"""

EXAMPLES = r"""
- name: Seed the database after migrating
  fastapi_metal.stack.app_steps:
    steps:
      - point: migrate
        commands: ["alembic upgrade head"]
      - point: after_migrate
        commands: ["python -m app.initial_data"]
    chdir: /opt/notes/releases/1.4.0-ab12cd34
    env_file: /opt/notes/deploys/1.4.0-ab12cd34+0f1e2d3c/env
    script_dir: /opt/notes/deploys/1.4.0-ab12cd34+0f1e2d3c/steps
    user: notes
    group: notes
    environment:
      PATH: /opt/notes/releases/1.4.0-ab12cd34/venv/bin:/usr/local/bin:/usr/bin:/bin
"""

RETURN = r"""
results:
  description: One entry per command run - point, command, rc, stdout, stderr, seconds.
  returned: always
  type: list
  elements: dict
reports:
  description: Per step, the last JSON object its commands printed on a line of their own.
  returned: always
  type: dict
"""

import grp
import json
import os
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

TAIL = 2000


def last_json(text: str) -> dict[str, object]:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return {}


def write_script(path: str, command: str, gid: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(command if command.endswith("\n") else command + "\n")
    os.chown(path, 0, gid)
    os.chmod(path, 0o640)


def run_one(module: AnsibleModule, unit: str, script: str) -> tuple[int, str, str]:
    p = module.params
    for verb in ("stop", "reset-failed"):
        subprocess.run(["systemctl", verb, unit], capture_output=True, check=False)
    argv = [
        "systemd-run", f"--unit={unit}", "--quiet", "--wait", "--pipe", "--collect",
        "--service-type=exec", f"--uid={p['user']}", f"--gid={p['group']}",
        f"--working-directory={p['chdir']}",
    ]  # fmt: skip
    argv += [f"--setenv={k}={v}" for k, v in sorted(p["environment"].items())]
    argv += [f"--property=EnvironmentFile={p['env_file']}"]
    # A transient unit starts at nice 0: a step keeps the priority Ansible runs at, as a
    # command Ansible started itself would.
    niceness = os.nice(0)
    if niceness:
        argv += [f"--nice={niceness}"]
    if p["timeout"]:
        argv += [f"--property=RuntimeMaxSec={p['timeout']}"]
    argv += ["/bin/sh", "-e", script]
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    return (
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "steps": {
                "type": "list", "elements": "dict", "required": True,
                "options": {
                    "point": {"type": "str", "required": True},
                    "commands": {"type": "list", "elements": "str", "default": []},
                },
            },
            "chdir": {"type": "path", "required": True},
            "env_file": {"type": "path", "required": True},
            "script_dir": {"type": "path", "required": True},
            "user": {"type": "str", "required": True},
            "group": {"type": "str", "required": True},
            "environment": {"type": "dict", "default": {}},
            "timeout": {"type": "int", "default": 0},
            "read_only": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )  # fmt: skip
    p = module.params
    todo = [(step["point"], [c for c in step["commands"] if c.strip()]) for step in p["steps"]]
    todo = [(point, commands) for point, commands in todo if commands]
    if not todo or (module.check_mode and not p["read_only"]):
        module.exit_json(changed=bool(todo), results=[], reports={}, skipped=bool(todo))
    for path in (p["chdir"], p["env_file"]):
        if not os.path.exists(path):
            if module.check_mode:  # the release is not staged: check mode wrote nothing
                module.exit_json(changed=False, results=[], reports={}, skipped=True,
                                 msg=f"check mode: {path} is not written yet")  # fmt: skip
            module.fail_json(msg=f"{todo[0][0]}: {path} does not exist", results=[], reports={})
    try:
        gid = grp.getgrnam(p["group"]).gr_gid
    except KeyError:
        module.fail_json(msg=f"no group {p['group']}", results=[], reports={})
    os.makedirs(p["script_dir"], mode=0o750, exist_ok=True)
    os.chown(p["script_dir"], 0, gid)
    results: list[dict[str, object]] = []
    reports: dict[str, dict[str, object]] = {}
    changed = False
    base = "".join(c if c.isalnum() or c in "-_" else "_" for c in os.path.basename(p["chdir"]))
    for point, commands in todo:
        for n, command in enumerate(commands, start=1):
            script = os.path.join(p["script_dir"], f"{point}-{n}.sh")
            write_script(script, command, gid)
            start = time.monotonic()
            rc, out, err = run_one(module, f"fastapi-metal-step-{base}-{point}-{n}", script)
            results.append(
                {"point": point, "command": command, "rc": rc, "stdout": out, "stderr": err,
                 "seconds": round(time.monotonic() - start, 2)}
            )  # fmt: skip
            found = last_json(out)
            if found:
                reports[point] = found
            changed = changed or (not p["read_only"] and found.get("changed", True) is not False)
            if rc != 0:
                tail = (err.strip() or out.strip())[-TAIL:]
                module.fail_json(
                    msg=(
                        f"step {point} (command {n} of {len(commands)}) failed with exit status "
                        f"{rc}: `{command.strip()}` in {p['chdir']} as {p['user']}; its output "
                        f"ends: {tail}"
                    ),
                    results=results, reports=reports, changed=changed, point=point,
                )  # fmt: skip
    module.exit_json(changed=changed, results=results, reports=reports)


if __name__ == "__main__":
    main()
