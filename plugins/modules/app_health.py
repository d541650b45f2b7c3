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
    round trip per try and waits whole seconds) until it answers with a 2xx status and, when
    O(release_key) is set, the JSON body's O(release_key) equals O(release).
  - With O(cwd) and O(unit), the proof that the release answers needs nothing from the app;
    the unit's main process (the Gunicorn master whose workers answer) must run in O(cwd),
    the release's directory, which a master only gets by being started on that release.
    Where C(/proc/PID/cwd) cannot be read (no ptrace rights, as in a container), the master
    must have started after every symbolic link on the way to the unit's C(WorkingDirectory)
    last changed, and that path must lead to O(cwd).
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
    description: JSON key of the answer that must equal O(release); empty accepts any 2xx.
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
    description: The unit whose journal a failure quotes and whose main process O(cwd) checks.
    type: str
  cwd:
    description: The directory the main process of O(unit) must run in (the release directory).
    type: path
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

- name: Wait until any 2xx comes from a master started on the release
  fastapi_metal.stack.app_health:
    url: "http://{{ ansible_host }}:8000/healthz"
    unit: shop.service
    cwd: /opt/shop/releases/2.0.1-9f8e7d6c5b
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
import os
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


def unit_show(unit: str) -> dict[str, str]:
    out = subprocess.run(
        ["systemctl", "show", unit, "--property", "MainPID",
         "--property", "ExecMainStartTimestampMonotonic", "--property", "WorkingDirectory"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def links_changed(path: str) -> float:
    """The newest change of a symbolic link on the way to ``path`` (0 when none)."""
    newest, seen = 0.0, ""
    for part in path.strip("/").split("/"):
        seen = os.path.join(seen or "/", part)
        if os.path.islink(seen):
            newest = max(newest, os.lstat(seen).st_mtime)
            seen = os.path.realpath(seen)
    return newest


def main_process_dir(unit: str) -> str:
    """Where the unit's main process runs ("" when it has none or it cannot be told).

    /proc/PID/cwd needs ptrace rights over the process (root without CAP_SYS_PTRACE, as in
    a container, has none): then the proof is that the main process started after every
    symbolic link on the way to its WorkingDirectory last changed, and where that path
    leads now is where it runs."""
    props = unit_show(unit)
    pid = props.get("MainPID", "0")
    if not pid.isdigit() or pid == "0":
        return ""
    try:
        return os.path.realpath(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        pass
    workdir = props.get("WorkingDirectory", "").lstrip("!~")
    started = props.get("ExecMainStartTimestampMonotonic", "0")
    if not workdir.startswith("/") or not started.isdigit() or started == "0":
        return ""
    started_at = int(started) / 1e6 + (time.time() - time.monotonic())
    if started_at < links_changed(workdir):
        return f"{workdir} as it was before its link changed"
    return os.path.realpath(workdir)


def healthy(status: int, body: str, key: str, want: str) -> bool:
    if not 200 <= status < 300:
        return False
    if not key:
        return True
    try:
        return str(json.loads(body).get(key)) == want
    except (ValueError, AttributeError):
        return False


def wait(
    url: str,
    timeout: float,
    key: str,
    want: str,
    unix_socket: str | None,
    unit: str | None = None,
    cwd: str | None = None,
) -> dict[str, object]:
    """Poll until healthy or ``timeout``: ok, elapsed, tries and the last answer."""
    start = time.monotonic()
    tries, last = 0, "no answer yet"
    while True:
        tries += 1
        try:
            status, body = probe(url, unix_socket)
            last = f"{status} {body.strip()[:300]}"
            ok = healthy(status, body, key, want)
            if ok and cwd and unit:
                where = main_process_dir(unit)
                if where != os.path.realpath(cwd):
                    ok = False
                    last += f" (but the main process of {unit} runs in {where or 'no directory'})"
            if ok:
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
            "cwd": {"type": "path"},
        },
        supports_check_mode=True,
    )
    p = module.params
    key, want = (p["release_key"], p["release"]) if p["release_key"] else ("", "")
    result = wait(p["url"], p["timeout"], key, want, p["unix_socket"], p["unit"], p["cwd"])
    result.update(url=p["url"], release=want, changed=False)
    if result.pop("ok"):
        module.exit_json(**result)
    lines = journal(p["unit"]) if p["unit"] else []
    what = f"serve release {want}" if key else "answer healthy"
    if p["cwd"]:
        what += f" from a master started in {p['cwd']}"
    msg = (
        f"did not {what} on {p['url']} within {p['timeout']:g} s; "
        f"last health answer: {result['last']}"
        + (f"; the journal of {p['unit']} ends: {' | '.join(lines)}" if lines else "")
    )
    module.fail_json(msg=msg, journal=lines, **result)


if __name__ == "__main__":
    main()
