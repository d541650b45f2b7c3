"""The health gate module (plugins/modules/app_health.py), run as Ansible runs it on a host
(a process of its own), against a loopback server whose answers the test sets. The gate on
real hosts runs in the fastapi_app and cluster scenarios."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import time
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


@pytest.mark.parametrize(
    ("status", "passes"), [(204, True), (299, True), (301, False), (500, False)]
)
def test_any_2xx_is_healthy_and_nothing_else(health_url: str, status: int, passes: bool) -> None:
    _Health.status = status
    result = gate(health_url, 0.5)
    assert (result["rc"] == 0) is passes, result


def test_the_master_must_run_in_the_release_directory(health_url: str, tmp_path: Path) -> None:
    """The gate that needs no release key: the unit's main process runs in the release. The
    systemctl stand-in names a real process whose working directory the test chose."""
    release, other = tmp_path / "releases" / "2.0", tmp_path / "releases" / "1.0"
    release.mkdir(parents=True)
    other.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    master = subprocess.Popen(["sleep", "60"], cwd=release)
    try:
        (bin_dir / "systemctl").write_text(f"#!/bin/sh\necho MainPID={master.pid}\n")
        (bin_dir / "systemctl").chmod(0o755)
        path = f"{bin_dir}:/usr/bin:/bin"
        args = {"url": health_url, "timeout": 0.5, "unit": "shop.service"}
        ok = run_module("app_health", {**args, "cwd": str(release)}, env={"PATH": path})
        assert ok["rc"] == 0 and ok["tries"] == 1, ok
        stale = run_module("app_health", {**args, "cwd": str(other)}, env={"PATH": path})
        assert stale["rc"] == 1, stale
        assert f"the main process of shop.service runs in {release}" in stale["last"]
        assert f"from a master started in {other}" in stale["msg"]
    finally:
        master.kill()
        master.wait()


def test_without_ptrace_rights_the_master_must_postdate_the_switch(
    health_url: str, tmp_path: Path
) -> None:
    """Where /proc/PID/cwd cannot be read (no such PID here), the proof is the master's start
    after the links on the way to WorkingDirectory changed, and where that path leads."""
    releases = tmp_path / "releases"
    (releases / "2.0").mkdir(parents=True)
    (releases / "1.0").mkdir()
    current = tmp_path / "current"
    current.symlink_to(releases / "2.0")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    path = f"{bin_dir}:/usr/bin:/bin"
    args = {"url": health_url, "timeout": 0.5, "unit": "shop.service"}

    def systemctl(started: float) -> None:
        mono = int((started - (time.time() - time.monotonic())) * 1e6)
        (bin_dir / "systemctl").write_text(
            "#!/bin/sh\necho MainPID=999999999\n"
            f"echo ExecMainStartTimestampMonotonic={mono}\necho WorkingDirectory={current}\n"
        )
        (bin_dir / "systemctl").chmod(0o755)

    switched = os.lstat(current).st_mtime
    systemctl(started=switched + 1)
    ok = run_module("app_health", {**args, "cwd": str(releases / "2.0")}, env={"PATH": path})
    assert ok["rc"] == 0, ok
    wrong = run_module("app_health", {**args, "cwd": str(releases / "1.0")}, env={"PATH": path})
    assert wrong["rc"] == 1 and f"runs in {releases / '2.0'}" in wrong["last"], wrong
    systemctl(started=switched - 1)
    stale = run_module("app_health", {**args, "cwd": str(releases / "2.0")}, env={"PATH": path})
    assert stale["rc"] == 1 and "as it was before its link changed" in stale["last"], stale
