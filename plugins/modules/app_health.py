#!/usr/bin/python
# Copyright: fastapi-metal maintainers
# MIT License (see LICENSE)
"""Wait until an app host answers healthy, serving the expected release."""

from __future__ import annotations

DOCUMENTATION = r"""
module: app_health
short_description: Wait until an app answers healthy on its health URL, serving the expected release
description:
  - Polls the URL every 0.2 s from the app host itself (an Ansible C(until) loop costs one
    round trip per try and waits whole seconds) until it answers 200 and, when
    O(release_key) is set, the JSON body's O(release_key) equals O(release).
  - Read-only, so it also runs in check mode.
  - On a timeout the failure names the last answer and, with O(unit), the last lines that
    unit wrote to the journal (why workers that cannot boot never answer).
options:
  url:
    description:
      - The health URL (C(http://10.0.0.5:8000/health/ready)).
      - With O(unix_socket) only its path counts.
    type: str
    required: true
  timeout:
    description: Seconds to wait.
    type: float
    default: 60
  release_key:
    description: JSON key of the answer that must equal O(release); empty accepts any 200.
    type: str
    default: ""
  release:
    description: The release the answer must report.
    type: str
    default: ""
  unix_socket:
    description: Connect to this unix socket instead of the URL's host and port.
    type: str
  unit:
    description: The systemd unit whose journal a failure quotes.
    type: str
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
- name: Wait until the host serves the release
  fastapi_metal.stack.app_health:
    url: "http://{{ ansible_host }}:8000/health/ready"
    release_key: release
    release: 1.4.0-ab12cd34
    unit: notes.service
"""

RETURN = r"""
elapsed:
  description: Seconds until the healthy answer (or until the timeout).
  returned: always
  type: float
tries:
  description: Requests sent.
  returned: always
  type: int
last:
  description: The last answer, C(<status> <body start>) or the connection error.
  returned: always
  type: str
journal:
  description: The last lines the unit wrote, on a timeout with O(unit).
  returned: failure
  type: list
  elements: str
"""

import http.client
import json
import socket
import subprocess
import time
from urllib.parse import urlsplit

from ansible.module_utils.basic import AnsibleModule

JOURNAL_LINES = 12


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


def probe(url: str, unix_socket: str | None) -> tuple[int, str]:
    parts = urlsplit(url)
    if unix_socket:
        conn: http.client.HTTPConnection = UnixHTTPConnection(unix_socket, 2.0)
    else:
        conn = http.client.HTTPConnection(
            parts.hostname or "localhost", parts.port or 80, timeout=2.0
        )
    try:
        conn.request("GET", parts.path or "/", headers={"User-Agent": "fastapi-metal-health-gate"})
        resp = conn.getresponse()
        return resp.status, resp.read(4096).decode("utf-8", "replace")
    finally:
        conn.close()


def journal(unit: str) -> list[str]:
    """The last lines ``unit`` wrote to the journal, each cut to 300 characters."""
    try:
        out = subprocess.run(
            ["journalctl", "--unit", unit, "--lines", str(JOURNAL_LINES), "--output", "cat",
             "--no-pager", "--quiet"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"(journalctl: {exc})"]
    lines = [line.rstrip()[:300] for line in out.stdout.splitlines() if line.strip()]
    return lines[-JOURNAL_LINES:]


def healthy(status: int, body: str, key: str, want: str) -> bool:
    if status != 200:
        return False
    if not key:
        return True
    try:
        return str(json.loads(body).get(key)) == want
    except (ValueError, AttributeError):
        return False


def wait(
    url: str, timeout: float, key: str, want: str, unix_socket: str | None
) -> dict[str, object]:
    """Poll until healthy or ``timeout``: ok, elapsed, tries and the last answer."""
    start = time.monotonic()
    tries, last = 0, "no answer yet"
    while True:
        tries += 1
        try:
            status, body = probe(url, unix_socket)
            last = f"{status} {body.strip()[:300]}"
            if healthy(status, body, key, want):
                return {
                    "ok": True,
                    "elapsed": round(time.monotonic() - start, 2),
                    "tries": tries,
                    "last": last,
                }
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() - start > timeout:
            return {
                "ok": False,
                "elapsed": round(time.monotonic() - start, 2),
                "tries": tries,
                "last": last,
            }
        time.sleep(0.2)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "url": {"type": "str", "required": True},
            "timeout": {"type": "float", "default": 60},
            "release_key": {"type": "str", "default": "", "no_log": False},
            "release": {"type": "str", "default": ""},
            "unix_socket": {"type": "str"},
            "unit": {"type": "str"},
        },
        supports_check_mode=True,
    )
    p = module.params
    key, want = (p["release_key"], p["release"]) if p["release_key"] else ("", "")
    result = wait(p["url"], p["timeout"], key, want, p["unix_socket"])
    result.update(url=p["url"], release=want, changed=False)
    if result.pop("ok"):
        module.exit_json(**result)
    lines = journal(p["unit"]) if p["unit"] else []
    what = f"serve release {want}" if key else "answer healthy"
    msg = (
        f"did not {what} on {p['url']} within {p['timeout']:g} s; "
        f"last health answer: {result['last']}"
        + (f"; the journal of {p['unit']} ends: {' | '.join(lines)}" if lines else "")
    )
    module.fail_json(msg=msg, journal=lines, **result)


if __name__ == "__main__":
    main()
