#!/usr/bin/python
# Copyright: fastapi-metal maintainers
# MIT License (see LICENSE)
"""The deploy lock: one file, created atomically, naming who holds it."""

from __future__ import annotations

DOCUMENTATION = r"""
module: deploy_lock
short_description: Take, check or release a deploy lock file naming its holder
description:
  - The lock is one file holding its holder as JSON, created with C(O_EXCL) so that of two
    deploys starting together exactly one gets it.
  - A deploy that finds the lock held by another fails at once, naming the holder (who, what,
    since when). Only O(force) takes a lock over (a deploy that died).
  - Taking a lock this holder (same C(id)) already holds changes nothing; releasing removes the
    file only when this holder holds it.
options:
  path:
    description: The lock file.
    type: path
    required: true
  state:
    description:
      - C(present) takes the lock for O(holder); C(absent) releases it if O(holder) holds it;
        C(free) only checks that nobody else holds it (a converge that takes no lock).
    type: str
    choices: [present, absent, free]
    default: present
  holder:
    description:
      - Who deploys what. C(id) identifies the holder; C(action), C(who), C(started) and
        C(release) are shown to whoever finds the lock held.
    type: dict
    default: {}
  force:
    description: Take (or check past) a lock held by another.
    type: bool
    default: false
  force_hint:
    description: How the user sets O(force), for the refusal's message.
    type: str
    default: force=true
  metrics_path:
    description:
      - A file in the node exporter's textfile directory. While the lock is held it holds
        C(fastapi_metal_deploy_lock_since_timestamp_seconds) with O(metrics_labels) and the
        holder's C(action), its value the holder's C(started_epoch); released, the file holds
        no sample. An alert on the lock's age finds a deploy that died holding it.
    type: path
  metrics_labels:
    description: Labels of the metric (e.g. the app's name).
    type: dict
    default: {}
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
- name: Take the deploy lock
  fastapi_metal.stack.deploy_lock:
    path: /var/lib/fastapi-metal/notes/deploy.lock
    holder: {id: "{{ run_id }}", action: deploy, who: ops@laptop, started: "2026-12-01T10:00:00Z"}
  run_once: true
"""

RETURN = r"""
holder:
  description: Who holds the lock after the call (empty when nobody does); on a refusal, the other.
  returned: always
  type: dict
"""

import json
import os
import socket
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.fastapi_metal.stack.plugins.module_utils import textfile

METRIC = "fastapi_metal_deploy_lock_since_timestamp_seconds"


def read_holder(path: str) -> dict[str, object] | None:
    """The holder recorded in ``path``; None when there is no lock, {} when it is unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text or "{}")
    except ValueError:
        return {"who": f"unreadable lock ({text[:80]!r})"}
    return holder if isinstance(holder, dict) else {}


def refusal(path: str, holder: dict[str, object], hint: str) -> str:
    what, who = holder.get("action", "deploy"), holder.get("who", "?")
    since, release = holder.get("started", "?"), holder.get("release", "?")
    return (
        f"Another deploy holds the lock {socket.gethostname()}:{path}: {what} by {who} since "
        f"{since} (release {release}). Wait for it to finish. If it died, break the lock with "
        f"{hint}."
    )


def take(path: str, holder: dict[str, object]) -> bool:
    """Create the lock for ``holder``; False when it exists already."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o750, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(holder, sort_keys=True) + "\n")
    return True


def publish(path: str | None, labels: dict[str, object], holder: dict[str, object] | None) -> None:
    """The lock's metric file: a sample while ``holder`` holds the lock, none after."""
    if not path:
        return
    samples = []
    if holder:
        try:
            since = float(str(holder.get("started_epoch", "")))
        except ValueError:
            since = time.time()
        action = holder.get("action", "deploy")
        samples.append(f"{METRIC}{textfile.label_set({**labels, 'action': action})} {since:.0f}")
    helps = [f"# HELP {METRIC} When the deploy lock was taken (absent: nobody holds it).",
             f"# TYPE {METRIC} gauge"]  # fmt: skip
    textfile.write(path, helps, samples)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "state": {
                "type": "str",
                "choices": ["present", "absent", "free"],
                "default": "present",
            },
            "holder": {"type": "dict", "default": {}},
            "force": {"type": "bool", "default": False},
            "force_hint": {"type": "str", "default": "force=true"},
            "metrics_path": {"type": "path"},
            "metrics_labels": {"type": "dict", "default": {}},
        },
        required_if=[("state", "present", ("holder",)), ("state", "absent", ("holder",))],
        supports_check_mode=True,
    )
    p = module.params
    path, mine = p["path"], p["holder"]
    found = read_holder(path)
    held_by_me = found is not None and bool(mine.get("id")) and found.get("id") == mine.get("id")
    metrics = p["metrics_path"], p["metrics_labels"]
    if p["state"] == "absent":
        if held_by_me and not module.check_mode:
            os.unlink(path)
            publish(*metrics, None)
        module.exit_json(changed=held_by_me, holder={} if held_by_me else (found or {}))
    if found is not None and not held_by_me and not p["force"]:
        module.fail_json(msg=refusal(path, found, p["force_hint"]), holder=found)
    if p["state"] == "free" or held_by_me:
        module.exit_json(changed=False, holder=found or {})
    if module.check_mode:
        module.exit_json(changed=True, holder=mine)
    if found is not None:  # forced: the other holder's lock goes
        os.unlink(path)
    if not take(path, mine):
        module.fail_json(
            msg=refusal(path, read_holder(path) or {}, p["force_hint"]),
            holder=read_holder(path) or {},
        )
    publish(*metrics, mine)
    module.exit_json(changed=True, holder=mine, broken=found or {})


if __name__ == "__main__":
    main()
