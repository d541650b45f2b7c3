"""The health gate module (plugins/modules/app_health.py), run as Ansible runs it on a host
(a process of its own), against a loopback server whose answers the test sets. The gate on
real hosts runs in the fastapi_app and cluster scenarios."""

from __future__ import annotations

import http.server
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.helpers.modules import run_module
from tests.helpers.net import loopback_http


class _Health(http.server.BaseHTTPRequestHandler):
    status: ClassVar[int] = 200
    release: ClassVar[str] = "1.0-abc"

    def do_GET(self) -> None:
        body = json.dumps({"status": "ok", "release": self.release}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_url() -> Iterator[str]:
    try:
        with loopback_http(_Health) as address:
            yield f"http://{address}/health"
    finally:
        _Health.status, _Health.release = 200, "1.0-abc"


def gate(
    url: str, timeout: float, release: str = "", unit: str | None = None, path: str | None = None
) -> dict[str, Any]:
    args: dict[str, Any] = {"url": url, "timeout": timeout}
    if release:
        args.update(release_key="release", release=release)
    if unit:
        args["unit"] = unit
    return run_module("app_health", args, env={"PATH": path or os.environ["PATH"]})


def test_a_healthy_answer_with_the_release_passes_at_once(health_url: str) -> None:
    result = gate(health_url, 5, "1.0-abc")
    assert result["rc"] == 0 and not result.get("failed"), result
    assert result["changed"] is False and result["release"] == "1.0-abc"
    assert result["tries"] == 1 and result["last"].startswith("200 ")
    assert "journal" not in result


def test_any_200_passes_without_a_release_key(health_url: str) -> None:
    _Health.release = "whatever"
    result = gate(health_url, 5)
    assert result["rc"] == 0 and result["tries"] == 1, result


def test_a_healthy_answer_from_another_release_fails_naming_it(health_url: str) -> None:
    _Health.release = "0.9-old"
    result = gate(health_url, 0.5, "1.0-abc")
    assert result["rc"] == 1 and result["failed"] is True
    assert '"release": "0.9-old"' in result["last"] and result["tries"] > 1
    assert result["msg"].startswith(f"did not serve release 1.0-abc on {health_url} within 0.5 s")
    assert "last health answer: 200 " in result["msg"]
    assert result["journal"] == [], "no unit named: nothing read"


def test_a_failed_gate_carries_the_units_last_journal_lines(
    health_url: str, tmp_path: Path
) -> None:
    # journalctl stand-in: records its arguments, writes 20 lines (the gate keeps the last 12).
    fake = tmp_path / "bin" / "journalctl"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$@" > {tmp_path}/args\n'
        'i=1; while [ $i -le 20 ]; do echo "line $i"; i=$((i+1)); done\n'
    )
    fake.chmod(0o755)
    _Health.status = 503
    result = gate(health_url, 0.5, unit="notes.service", path=f"{fake.parent}:/usr/bin:/bin")
    assert result["rc"] == 1
    assert result["last"].startswith("503 ")
    assert result["journal"] == [f"line {i}" for i in range(9, 21)]
    assert "--unit notes.service" in (tmp_path / "args").read_text()
    assert result["msg"].endswith("the journal of notes.service ends: " + " | ".join(
        f"line {i}" for i in range(9, 21)
    ))  # fmt: skip


def test_no_listener_is_named_as_refused(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result = gate(f"http://127.0.0.1:{port}/health", 0.5, unit="x.service", path=str(tmp_path))
    assert result["rc"] == 1
    assert result["last"].startswith("ConnectionRefusedError"), result
    assert result["journal"][0].startswith("(journalctl:"), "no journalctl: said, not hidden"
