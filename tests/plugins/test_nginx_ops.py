"""The nginx operations behind the nginx_upstream and nginx_live modules and the operator
command (plugins/module_utils/nginx_ops.py): the parts that need no nginx and no nftables -
reading the upstream block, nginx's time syntax, how an undrain reads which server answered
its probe - and the modules' refusals, run as Ansible runs them. The drain itself
(nftables, no reload, the probe through nginx) runs for real in the edge and cluster
scenarios."""

from __future__ import annotations

import http.server
import importlib.util
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers.modules import ROOT, run_module
from tests.helpers.net import loopback_http

OPS = ROOT / "plugins/module_utils/nginx_ops.py"

CONF = """\
http {
    upstream fastapi_metal_app {
        server 10.0.0.31:8000 max_fails=1 fail_timeout=2s;
        server app2.internal:8000 max_fails=0;
        # server 10.0.0.99:8000;
        server unix:/run/notes/notes.sock down;
    }
    server {
        listen 443 ssl;
        server_name app.example.com;
    }
}
"""


@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    conf = tmp_path / "nginx.conf"
    conf.write_text(CONF)
    spec = importlib.util.spec_from_file_location("nginx_ops", OPS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "CONF", str(conf))
    monkeypatch.setattr(module, "SETTINGS", str(tmp_path / "fastapi-metal.json"))
    return module


def test_the_upstream_servers_and_their_parameters_are_read(helper: ModuleType) -> None:
    assert helper.upstream_params() == {
        "10.0.0.31:8000": {"max_fails": "1", "fail_timeout": "2s"},
        "app2.internal:8000": {"max_fails": "0"},
        "unix:/run/notes/notes.sock": {"down": ""},
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2s", 2.0), ("10", 10.0), ("500ms", 0.5), ("1m", 60.0), ("", 10.0), ("bogus", 10.0)],
)
def test_nginx_time_syntax(helper: ModuleType, value: str, expected: float) -> None:
    assert helper.seconds(value) == expected


def test_the_failure_window_is_fail_timeout_plus_nginx_clock_grain(helper: ModuleType) -> None:
    assert helper.fail_window({"max_fails": "1", "fail_timeout": "2s"}) == 3.0
    assert helper.fail_window({}) == 11.0  # nginx's defaults: max_fails=1 fail_timeout=10s
    assert helper.fail_window({"max_fails": "0", "fail_timeout": "2s"}) == 0.0  # never marked


def test_the_probe_listener_is_read_from_the_roles_settings(
    helper: ModuleType, tmp_path: Path
) -> None:
    assert helper.probe_address() is None  # no settings file: a configuration before the probe
    settings = Path(helper.SETTINGS)
    settings.write_text('{"probe": "127.0.0.1:8299"}\n')
    assert helper.probe_address() == "127.0.0.1:8299"
    for bad in ('{"probe": "10.0.0.1:8299"}', "[]", "probe=8299"):
        settings.write_text(bad)
        with pytest.raises(helper.NginxOpsError, match=str(settings)):
            helper.probe_address()


@pytest.mark.parametrize(
    ("addr", "status", "expected"),
    [
        ("10.0.0.31:8000", "200", ("10.0.0.31:8000", "200")),
        ("10.0.0.31:8000", "404", ("10.0.0.31:8000", "404")),  # an answer all the same
        # refused by the drained server, answered by the next one
        ("10.0.0.31:8000, 10.0.0.32:8000", "502, 200", ("10.0.0.32:8000", "200")),
        ("10.0.0.31:8000, 10.0.0.32:8000", "502, 502", None),
        ("fastapi_metal_app", "502", None),  # no live upstreams: nginx answered itself
        ("10.0.0.31:8000", "504", None),
        ("", "", None),
    ],
)
def test_which_server_answered_a_probe(
    helper: ModuleType, addr: str, status: str, expected: tuple[str, str] | None
) -> None:
    assert helper.answered_by(addr, status) == expected


def test_a_server_name_resolves_as_nginx_resolves_it(helper: ModuleType) -> None:
    assert (socket.AF_INET, "127.0.0.1", 8000) in helper.addresses("localhost:8000")
    assert helper.addresses("[::1]:8000") == [(socket.AF_INET6, "::1", 8000)]
    with pytest.raises(helper.NginxOpsError) as exc:
        helper.addresses("no-port")
    assert exc.value.code == 2


def test_an_unknown_server_is_refused_before_anything_changes(helper: ModuleType) -> None:
    with pytest.raises(helper.NginxOpsError) as exc:
        helper.upstream("10.0.0.99:8000", "down", False)  # commented out: not a server
    assert exc.value.code == 3
    assert "10.0.0.99:8000 is not an upstream server" in str(exc.value)


def test_a_drain_is_refused_while_the_upstream_keeps_idle_connections(
    helper: ModuleType,
) -> None:
    # Cached connections would carry requests to the drained server past the refusal.
    conf = Path(helper.CONF)
    conf.write_text(
        conf.read_text().replace(
            "    }\n    server {", "        keepalive 32;\n    }\n    server {", 1
        )
    )
    assert helper.upstream_keepalive()
    with pytest.raises(helper.NginxOpsError) as exc:
        helper.upstream("10.0.0.31:8000", "down", False)
    assert exc.value.code == 4
    assert "nginx_upstream_keepalive: 0" in str(exc.value)


def test_the_running_configuration_is_stale_until_a_load_records_the_file(
    helper: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(helper, "LOADED", str(tmp_path / "state" / "loaded.sha256"))
    monkeypatch.setattr(helper, "is_active", lambda: True)
    assert helper.stale(), "nothing recorded: nginx may run any configuration"
    helper.record_loaded(helper.conf_digest())
    assert not helper.stale()
    conf = Path(helper.CONF)
    conf.write_text(conf.read_text() + "# a change written by a run that then died\n")
    assert helper.stale(), "the file changed after the last load"
    monkeypatch.setattr(helper, "is_active", lambda: False)
    assert not helper.stale(), "a stopped nginx is started by the role, not reloaded"


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def loopback_server() -> Iterator[str]:
    with loopback_http(_Answer) as address:
        yield address


def test_a_drained_server_is_put_back_only_when_it_answers(
    helper: ModuleType, loopback_server: str
) -> None:
    address = loopback_server
    assert helper.answers(address) is None, "a server answering 200 answers (positive control)"
    _Answer.status = 404
    try:
        assert helper.answers(address) is None, "any answer below 500 is an answer"
        _Answer.status = 503
        assert helper.answers(address) == f"{address} answered 503"
    finally:
        _Answer.status = 200
    with socket.socket() as closed:  # a port nobody listens on: refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    why = helper.answers(f"127.0.0.1:{port}")
    assert why is not None and why.startswith(f"no answer from 127.0.0.1:{port}"), why


# The module and the operator command around the same code. A unix: server is drained by
# marking it `down` in nginx.conf (then a reload): check mode reads the file and changes
# nothing, which runs without nginx.
@pytest.fixture
def module_env(tmp_path: Path) -> dict[str, str]:
    conf = tmp_path / "module.conf"
    conf.write_text(CONF)
    return {
        "FASTAPI_METAL_NGINX_CONF": str(conf),
        "FASTAPI_METAL_NGINX_LOCK": str(tmp_path / "lock"),
    }


def test_the_module_reports_the_state_before_and_after_in_check_mode(
    module_env: dict[str, str],
) -> None:
    sock = "unix:/run/notes/notes.sock"  # marked down in CONF: drained
    back = run_module("nginx_upstream", {"server": sock, "state": "serving"}, check=True,
                      env=module_env)  # fmt: skip
    assert back["rc"] == 0 and back["changed"] is True, back
    assert (back["previous"], back["state"]) == ("drained", "serving")
    assert back["diff"] == {"before": f"{sock}: drained\n", "after": f"{sock}: serving\n"}
    again = run_module("nginx_upstream", {"server": sock, "state": "drained"}, check=True,
                       env=module_env)  # fmt: skip
    assert again["changed"] is False and again["previous"] == "drained", again
    assert "down;" in Path(module_env["FASTAPI_METAL_NGINX_CONF"]).read_text(), "check mode"


def test_the_module_fails_naming_a_server_that_is_not_upstream(
    module_env: dict[str, str],
) -> None:
    result = run_module("nginx_upstream", {"server": "10.0.0.99:8000", "state": "drained"},
                        env=module_env)  # fmt: skip
    assert result["rc"] == 1 and result["failed"] is True
    assert "10.0.0.99:8000 is not an upstream server" in result["msg"], result


def test_the_operator_command_prints_words_and_exit_codes(
    module_env: dict[str, str], tmp_path: Path
) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "nginx_ops.py").write_text(OPS.read_text())
    launcher = (ROOT / "roles/nginx/files/fastapi-metal-nginx").read_text()
    command = tmp_path / "fastapi-metal-nginx"
    command.write_text(launcher.replace("/usr/local/lib/fastapi-metal", str(lib)))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(command), *args], capture_output=True, text=True, check=False,
            env=module_env,
        )  # fmt: skip

    ok = run("upstream", "unix:/run/notes/notes.sock", "up", "--check")
    assert (ok.returncode, ok.stdout) == (0, "changed (check mode: nothing done)\n"), ok.stderr
    unknown = run("upstream", "10.0.0.99:8000", "down")
    assert unknown.returncode == 3 and "is not an upstream server" in unknown.stderr
    usage = run("frobnicate")
    assert usage.returncode == 2 and usage.stderr.startswith("usage: fastapi-metal-nginx")


def test_drains_are_published_with_since_when(
    helper: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the HostLeftDrained alert reads: one sample per drained server, its value the
    moment it was first seen drained (kept across calls), gone once it is back."""
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    monkeypatch.setattr(helper, "DRAINS", str(tmp_path / "state" / "drained-since.json"))
    monkeypatch.setattr(helper, "TEXTFILE_DIR", str(textfile))
    prom = textfile / "fastapi_metal_drains.prom"
    drained = ["10.0.0.31:8000"]
    monkeypatch.setattr(helper, "list_drained", lambda: list(drained))
    first = helper.publish_drains()
    assert list(first) == ["10.0.0.31:8000"]
    drained.append("10.0.0.32:8000")
    second = helper.publish_drains()
    assert second["10.0.0.31:8000"] == first["10.0.0.31:8000"], "since when is kept"
    samples = [x for x in prom.read_text().splitlines() if not x.startswith("#")]
    assert [s.split(" ")[0] for s in samples] == [
        'fastapi_metal_edge_drained_since_timestamp_seconds{server="10.0.0.31:8000"}',
        'fastapi_metal_edge_drained_since_timestamp_seconds{server="10.0.0.32:8000"}',
    ]
    drained.clear()
    assert helper.publish_drains() == {}
    assert [x for x in prom.read_text().splitlines() if not x.startswith("#")] == []
