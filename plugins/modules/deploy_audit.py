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
  syslog_ident:
    description:
      - When set, the line is also sent to the host's journal (syslog, facility local0)
        under this identifier, so that it reaches the central journal with the rest.
    type: str
  metrics_path:
    description:
      - A file in the node exporter's textfile directory, rewritten with the last record as
        a deploy marker C(fastapi_metal_deploy_finished_timestamp_seconds) (labels
        O(metrics_labels) and the record's C(action), C(outcome) and C(to_release) as
        C(release); its value when the line was written). Prometheus counts deploys as the
        marker's changes.
    type: path
  metrics_labels:
    description: Labels of the marker (e.g. the app's name).
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
import syslog
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.fastapi_metal.stack.plugins.module_utils import textfile

MARKER = "fastapi_metal_deploy_finished_timestamp_seconds"


def append(path: str, line: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", mode=0o750, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def marker(path: str, labels: dict[str, object], record: dict[str, object]) -> None:
    """The deploy marker: the last record of this log, as one sample."""
    release = record.get("to_release") or record.get("release") or ""
    names = {**labels, "action": record.get("action", ""), "outcome": record.get("outcome", "")}
    sample = f"{MARKER}{textfile.label_set({**names, 'release': release})} {time.time():.0f}"
    what = "When the last deploy, rollback or hold of this app on this host finished."
    helps = [f"# HELP {MARKER} {what}", f"# TYPE {MARKER} gauge"]
    textfile.write(path, helps, [sample])


def to_journal(ident: str, line: str) -> None:
    syslog.openlog(ident, 0, syslog.LOG_LOCAL0)
    try:
        syslog.syslog(syslog.LOG_INFO, line)
    finally:
        syslog.closelog()


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "record": {"type": "dict", "required": True},
            "syslog_ident": {"type": "str"},
            "metrics_path": {"type": "path"},
            "metrics_labels": {"type": "dict", "default": {}},
        },
        supports_check_mode=True,
    )
    line = json.dumps(module.params["record"], sort_keys=True, default=str)
    if "\n" in line:  # json.dumps escapes newlines; kept as a guard for the one-line promise
        module.fail_json(msg="a record must fit on one line")
    p = module.params
    if not module.check_mode:
        append(p["path"], line)
        if p["syslog_ident"]:
            to_journal(p["syslog_ident"], line)
        if p["metrics_path"]:
            marker(p["metrics_path"], p["metrics_labels"], p["record"])
    module.exit_json(changed=True, line=line)


if __name__ == "__main__":
    main()
