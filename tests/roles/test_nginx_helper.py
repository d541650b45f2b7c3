"""The nginx role's drain helper (roles/nginx/files/fastapi-metal-nginx): the parts that need
no nginx and no nftables - reading the upstream block, nginx's time syntax, and how an
undrain reads which server answered its probe. The drain itself (nftables, no reload, the
probe through nginx) runs for real in the edge and cluster scenarios."""

from __future__ import annotations

import http.server
import importlib.machinery
import importlib.util
import socket
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers.net import loopback_http

HELPER = Path(__file__).resolve().parents[2] / "roles/nginx/files/fastapi-metal-nginx"

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
    loader = importlib.machinery.SourceFileLoader("fastapi_metal_nginx", str(HELPER))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    monkeypatch.setattr(module, "CONF", str(conf))
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


def test_the_probe_listener_is_found_in_nginx_conf(helper: ModuleType, tmp_path: Path) -> None:
    assert helper.probe_port() is None
    conf = Path(helper.CONF)
    conf.write_text(
        conf.read_text().replace(
            "    server {\n        listen 443",
            "    server {\n        listen 127.0.0.1:8299; # fastapi-metal-nginx probe\n    }\n"
            "    server {\n        listen 443",
        )
    )
    assert helper.probe_port() == 8299


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
    with pytest.raises(SystemExit):
        helper.addresses("no-port")


def test_an_unknown_server_is_refused_before_anything_changes(
    helper: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        helper.upstream("10.0.0.99:8000", "down", False)  # commented out: not a server
    assert exc.value.code == 3
    assert "10.0.0.99:8000 is not an upstream server" in capsys.readouterr().err


def test_a_drain_is_refused_while_the_upstream_keeps_idle_connections(
    helper: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    # Cached connections would carry requests to the drained server past the refusal.
    conf = Path(helper.CONF)
    conf.write_text(
        conf.read_text().replace(
            "    }\n    server {", "        keepalive 32;\n    }\n    server {", 1
        )
    )
    assert helper.upstream_keepalive()
    with pytest.raises(SystemExit) as exc:
        helper.upstream("10.0.0.31:8000", "down", False)
    assert exc.value.code == 4
    assert "nginx_upstream_keepalive: 0" in capsys.readouterr().err


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
