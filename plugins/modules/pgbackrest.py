#!/usr/bin/python
# Copyright: fastapi-metal maintainers
# MIT License (see LICENSE)
"""pgBackRest's stanza, check, backup, info and restore, as postgres, with structured results."""

from __future__ import annotations

DOCUMENTATION = r"""
module: pgbackrest
short_description: Create a pgBackRest stanza, check it, back up, restore or read the repository
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
  - C(restore) replaces the cluster's data with the repository's - the latest state, one backup
    (O(set)) or a moment (O(target_time)) - and brings PostgreSQL back as a primary. It checks
    the request against the repository first (an unknown backup, a moment in the future or
    before the oldest backup fail before anything stops); while PostgreSQL runs, it pushes the
    WAL written so far into the repository (C(pgbackrest check)); then it stops O(service),
    restores (C(--delta)), starts it, waits for the end of recovery and appends a JSON line
    saying what was restored to O(record). In check mode it validates the request, proves
    that WAL reaches the repository (C(pgbackrest check), which switches a WAL segment) and
    reports the plan.
options:
  command:
    description: What to do.
    type: str
    choices: [stanza, check, backup, info, restore]
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
  annotation:
    description: With O(command=backup), key/value pairs stored with the backup (C(--annotation)).
    type: dict
    default: {}
  set:
    description:
      - With O(command=restore), the label of the backup to restore. Alone, the cluster comes
        back as that backup left it (C(--type=immediate)); with O(target_time), the replay
        starts from it.
    type: str
  target_time:
    description:
      - With O(command=restore), the moment to restore to, with its time zone, for example
        C(2026-12-04 21:05:00+00). Without O(set), pgBackRest starts from the newest backup
        that ended before it. Without O(set) and O(target_time), the latest state is restored
        (every WAL segment in the repository is replayed).
    type: str
  service:
    description: With O(command=restore), the PostgreSQL cluster's systemd unit.
    type: str
    default: postgresql@15-main
  port:
    description: With O(command=restore), PostgreSQL's port (to wait for the end of recovery).
    type: int
    default: 5432
  timeout:
    description: With O(command=restore), seconds PostgreSQL may take to finish recovery.
    type: int
    default: 600
  record:
    description: With O(command=restore), the file a JSON line per restore is appended to.
    type: path
    default: /var/log/pgbackrest/fastapi-metal-restores.jsonl
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

- name: Take an incremental backup before migrating
  fastapi_metal.stack.pgbackrest:
    command: backup
    stanza: main
    type: incr
    annotation: {reason: before migrating}
  register: backup

- name: Restore the cluster to a moment
  fastapi_metal.stack.pgbackrest:
    command: restore
    stanza: main
    target_time: "2026-12-04 21:05:00+00"
  register: restored
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
restore:
  description:
    - What O(command=restore) restored (or would, in check mode) - the backup set, the recovery
      type and target, the timeline PostgreSQL runs on afterwards, and how long each phase took.
  returned: with O(command=restore)
  type: dict
  sample:
    set: 20261204-203801F_20261204-210102I
    type: time
    target: "2026-12-04 21:05:00+00"
    timeline_before: 2
    timeline: 3
    seconds: {check: 1.1, stop: 0.4, restore: 2.9, recovery: 1.3}
"""

import datetime
import json
import re
import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule

RECORD = "/var/log/pgbackrest/fastapi-metal-restores.jsonl"


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
            "annotation": b.get("annotation") or {},
        }
        for b in stanza.get("backup", [])
    ]


def parse_time(value: str) -> datetime.datetime | None:
    """A moment as pgBackRest takes it (``YYYY-MM-DD HH:MM:SS[.ffffff]+TZ``), or None."""
    text = value.strip()
    if not re.fullmatch(
        r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?([+-]\d{2}(:?\d{2})?|Z)", text
    ):
        return None
    text = re.sub(r"([+-]\d{2})$", r"\1:00", text.replace("Z", "+00:00"))
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        return None


def restore_plan(module: AnsibleModule, known: list[dict[str, Any]]) -> dict[str, Any]:
    """Check a restore request against the repository's backups; fail naming what is wrong."""
    p = module.params
    label, target = p["set"], p["target_time"]
    example = "for example set: 20261204-203801F or target_time: '2026-12-04 21:05:00+00'"
    if not known:
        module.fail_json(msg=f"pgbackrest: stanza {p['stanza']} has no backup to restore from")
    if label and label not in {b["label"] for b in known}:
        module.fail_json(
            msg=f"pgbackrest: no backup {label!r} in stanza {p['stanza']}; it holds "
            + ", ".join(b["label"] for b in known),
        )
    if target:
        when = parse_time(target)
        if when is None:
            module.fail_json(
                msg=f"pgbackrest: target_time {target!r} is not a moment with its time zone; "
                + example
            )
            return {}  # fail_json exits; this line is for the type checker
        epoch = when.timestamp()
        if epoch > time.time():
            module.fail_json(msg=f"pgbackrest: target_time {target!r} is in the future")
        base = [b for b in known if b["stop"] and b["stop"] < epoch]
        if label:
            chosen = next(b for b in known if b["label"] == label)
            if chosen["stop"] >= epoch:
                module.fail_json(
                    msg=f"pgbackrest: backup {label} ended after target_time {target!r}: "
                    "pick an older backup or leave set out"
                )
        elif not base:
            module.fail_json(
                msg=f"pgbackrest: target_time {target!r} is before the end of the oldest backup "
                f"({known[0]['label']}): nothing in the repository can restore it"
            )
        return {"set": label or base[-1]["label"], "type": "time", "target": target}
    if label:
        return {"set": label, "type": "immediate", "target": None}
    return {"set": known[-1]["label"], "type": "default", "target": None}


def sql(module: AnsibleModule, port: int, query: str) -> tuple[int, str]:
    rc, out, err = module.run_command(
        ["runuser", "-u", "postgres", "--", "psql", "-XAtq", "-p", str(port), "-d", "postgres",
         "-c", query]
    )  # fmt: skip
    return rc, (out if rc == 0 else err).strip()


def archiving(module: AnsibleModule) -> None:
    """Before anything stops: while PostgreSQL runs, WAL must reach the repository (the
    restore pushes what was written last), else fail now. It switches one WAL segment."""
    p = module.params
    if module.run_command(["systemctl", "is-active", "--quiet", p["service"]])[0] != 0:
        return
    rc, out, err = run(module, f"--stanza={p['stanza']}", "check")
    if rc != 0:
        module.fail_json(
            msg=f"pgbackrest check failed (rc {rc}): WAL does not reach the repository, so the "
            f"latest writes could not be kept; nothing was stopped. {err or out}"
        )


def restore(module: AnsibleModule, plan: dict[str, Any]) -> dict[str, Any]:
    p = module.params
    stanza, service = p["stanza"], p["service"]
    seconds: dict[str, float] = {}

    def lap(name: str, t0: float) -> None:
        seconds[name] = round(time.monotonic() - t0, 2)

    t0 = time.monotonic()
    before: int | None = None
    rc = module.run_command(["systemctl", "is-active", "--quiet", service])[0]
    if rc == 0:
        timeline = sql(module, p["port"], "SELECT timeline_id FROM pg_control_checkpoint()")[1]
        before = int(timeline) if timeline.isdigit() else None
        # What was written up to now reaches the repository (a moment a minute ago may still
        # sit in the segment PostgreSQL is writing): check switches the segment and waits.
        rc, out, err = run(module, f"--stanza={stanza}", "check")
        if rc != 0:
            module.fail_json(
                msg=f"pgbackrest check failed before the restore (rc {rc}); nothing was stopped: "
                f"{err or out}"
            )
        lap("check", t0)
    t0 = time.monotonic()
    rc, out, err = module.run_command(["systemctl", "stop", service])
    if rc != 0:
        module.fail_json(msg=f"systemctl stop {service} failed (rc {rc}): {err or out}")
    lap("stop", t0)
    args = [f"--stanza={stanza}", "--delta", f"--set={plan['set']}"]
    if plan["type"] != "default":
        args += [f"--type={plan['type']}", "--target-action=promote"]
    if plan["target"]:
        args.append(f"--target={plan['target']}")
    t0 = time.monotonic()
    rc, out, err = run(module, *args, "restore")
    if rc != 0:
        module.fail_json(
            msg=f"pgbackrest restore failed (rc {rc}); {service} is stopped: {err or out}",
            restore=plan,
        )
    lap("restore", t0)
    t0 = time.monotonic()
    rc, out, err = module.run_command(["systemctl", "start", service])
    if rc != 0:
        journal = module.run_command(["journalctl", "-u", service, "-n", "30", "--no-pager"])[1]
        module.fail_json(msg=f"{service} did not start after the restore: {err}\n{journal}")
    deadline = time.monotonic() + p["timeout"]
    while True:
        rc, answer = sql(module, p["port"], "SELECT pg_is_in_recovery()")
        if rc == 0 and answer == "f":
            break
        if time.monotonic() > deadline:
            module.fail_json(
                msg=f"PostgreSQL still recovering after {p['timeout']} s (last answer: {answer})",
                restore=plan,
            )
        time.sleep(0.3)
    lap("recovery", t0)
    timeline = sql(module, p["port"], "SELECT timeline_id FROM pg_control_checkpoint()")[1]
    done = {
        **plan,
        "timeline_before": before,
        "timeline": int(timeline) if timeline.isdigit() else None,
        "seconds": seconds,
    }
    line = {
        "restored": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "stanza": stanza,
        **done,
    }
    with open(p["record"], "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line, sort_keys=True) + "\n")
    return done


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "command": {"type": "str", "choices": ["stanza", "check", "backup", "info", "restore"],
                        "required": True},
            "stanza": {"type": "str", "required": True},
            "type": {"type": "str", "choices": ["full", "diff", "incr"], "default": "full"},
            "only_if_none": {"type": "bool", "default": False},
            "annotation": {"type": "dict", "default": {}},
            "set": {"type": "str"},
            "target_time": {"type": "str"},
            "service": {"type": "str", "default": "postgresql@15-main"},
            "port": {"type": "int", "default": 5432},
            "timeout": {"type": "int", "default": 600},
            "record": {"type": "path", "default": RECORD},
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
    if p["command"] == "restore":
        plan = restore_plan(module, backups(state))
        if module.check_mode:
            archiving(module)
        done = plan if module.check_mode else restore(module, plan)
        module.exit_json(
            changed=True, backups=backups(state), status=state.get("status", {}),
            seconds=round(time.monotonic() - t0, 2), restore=done,
        )  # fmt: skip
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
            notes = [f"--annotation={k}={v}" for k, v in sorted(p["annotation"].items())]
            rc, out, err = run(module, f"--stanza={name}", f"--type={p['type']}", *notes, "backup")
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
