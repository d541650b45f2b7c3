#!/usr/bin/python3
"""Poll an app's health URL until it answers 200 reporting the expected release.

    wait_healthy.py URL TIMEOUT [RELEASE_KEY RELEASE] [--unix-socket PATH] [--unit UNIT]

Polls every 0.2 s (an Ansible `until` loop costs a round trip per try and waits whole
seconds). Prints one JSON line: ok, elapsed seconds, tries and the last answer, which is
what a failed rollout names. On a timeout with --unit, "journal" holds the last lines the
unit wrote (why workers that cannot boot never answer). Exit 0 when healthy, 1 on timeout.
Standard library only.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit


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


JOURNAL_LINES = 12


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


def _option(args: list[str], name: str) -> str | None:
    """Remove ``name VALUE`` from ``args``; the value, or None when absent."""
    if name not in args:
        return None
    i = args.index(name)
    value = args[i + 1]
    del args[i : i + 2]
    return value


def main() -> int:
    args = sys.argv[1:]
    unix_socket = _option(args, "--unix-socket")
    unit = _option(args, "--unit")
    url, timeout = args[0], float(args[1])
    key, want = (args[2], args[3]) if len(args) >= 4 and args[2] else ("", "")
    start = time.monotonic()
    tries, last = 0, "no answer yet"
    while True:
        tries += 1
        try:
            status, body = probe(url, unix_socket)
            last = f"{status} {body.strip()[:300]}"
            if status == 200:
                if not key:
                    break
                try:
                    if str(json.loads(body).get(key)) == want:
                        break
                except (ValueError, AttributeError):
                    pass
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() - start > timeout:
            print(
                json.dumps(
                    {
                        "ok": False,
                        "elapsed": round(time.monotonic() - start, 2),
                        "tries": tries,
                        "last": last,
                        "url": url,
                        "want": want,
                        "journal": journal(unit) if unit else [],
                    }
                )
            )
            return 1
        time.sleep(0.2)
    print(
        json.dumps(
            {
                "ok": True,
                "elapsed": round(time.monotonic() - start, 2),
                "tries": tries,
                "last": last,
                "url": url,
                "want": want,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
