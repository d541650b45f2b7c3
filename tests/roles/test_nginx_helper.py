"""The nginx role's drain helper (roles/nginx/files/fastapi-metal-nginx): the parts that need
no nginx and no nftables - reading the upstream block, nginx's time syntax, and how long a
drain waits so that two servers are never out at once. The drain itself (nftables, no
reload) runs for real in the edge and cluster scenarios."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import time
from pathlib import Path
from types import ModuleType

import pytest

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
    monkeypatch.setattr(module, "STATE", str(tmp_path / "undrained.json"))
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


def test_a_drain_waits_until_the_server_that_just_came_back_is_past_its_window(
    helper: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(helper.time, "sleep", slept.append)
    params = helper.upstream_params()
    now = time.monotonic()
    # 10.0.0.31 came back 1 s ago (window 3 s): draining another server waits about 2 s ...
    helper.save_state({"10.0.0.31:8000": now - 1.0})
    helper.wait_for_the_others("app2.internal:8000", params)
    assert len(slept) == 1 and 1.9 < slept[0] <= 2.0
    # ... draining that server itself does not wait for it ...
    helper.wait_for_the_others("10.0.0.31:8000", params)
    # ... nor does anything once the window is over, or for a server never marked failed.
    helper.save_state({"10.0.0.31:8000": now - 3.5, "app2.internal:8000": now})
    helper.wait_for_the_others("10.0.0.31:8000", params)
    assert len(slept) == 1
    assert json.loads(Path(helper.STATE).read_text()).keys() == {
        "10.0.0.31:8000",
        "app2.internal:8000",
    }


def test_a_server_name_resolves_as_nginx_resolves_it(helper: ModuleType) -> None:
    import socket

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
