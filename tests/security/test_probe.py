"""The lab's TCP probe (tests/helpers/probe.py): a verdict only where one is earned."""

from __future__ import annotations

import errno
import json
import socket
import subprocess
from typing import Any

import pytest

from tests.helpers.probe import PROBE, expected_verdicts, probe_command, probe_problems


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_open_and_refused_on_loopback() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        open_target = f"127.0.0.1:{listener.getsockname()[1]}"
        closed_target = f"127.0.0.1:{free_port()}"
        out = subprocess.run(
            ["bash", "-c", probe_command([open_target, closed_target])],
            capture_output=True,
            text=True,
            check=True,
        )
    seen = json.loads(out.stdout)
    assert seen == {open_target: "open", closed_target: "refused"}
    assert probe_problems(seen, [open_target, closed_target]) == []


@pytest.fixture
def probe_fn() -> Any:
    namespace: dict[str, Any] = {"__name__": "probe"}
    exec(PROBE, namespace)  # the function only: the __main__ part does not run
    return namespace["probe"]


def refuse_to_resolve(*_args: object, **_kwargs: object) -> object:
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def failing_connect(error: BaseException) -> Any:
    def connect(*_args: object, **_kwargs: object) -> object:
        raise error

    return connect


def test_a_name_that_does_not_resolve_is_not_a_timeout(
    probe_fn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", refuse_to_resolve)
    assert probe_fn("db1.lab.test:5432", 0.2) == "unresolved: [Errno -2] Name or service not known"


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (
            OSError(errno.EHOSTUNREACH, "No route to host"),
            "unreachable: [Errno 113] No route to host",
        ),
        (
            OSError(errno.ENETUNREACH, "Network is unreachable"),
            "unreachable: [Errno 101] Network is unreachable",
        ),
        (OSError(errno.EACCES, "Permission denied"), "error: [Errno 13] Permission denied"),
        (TimeoutError("timed out"), "timeout"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "refused"),
    ],
)
def test_each_failure_is_named_for_what_it_is(
    probe_fn: Any, monkeypatch: pytest.MonkeyPatch, error: BaseException, verdict: str
) -> None:
    monkeypatch.setattr(socket, "create_connection", failing_connect(error))
    assert probe_fn("127.0.0.1:9", 0.2) == verdict


def test_a_timeout_without_an_open_target_beside_it_proves_nothing() -> None:
    assert probe_problems({"10.0.0.1:8000": "timeout"}, ["10.0.0.1:8000"]) == [
        "nothing open among ['10.0.0.1:8000']: without a positive control beside it,"
        " a timeout proves nothing"
    ]


def test_an_unreachable_or_unresolved_target_is_no_verdict() -> None:
    seen = {
        "a:443": "open",
        "b:8000": "unreachable: [Errno 113] No route to host",
        "c:1": "unresolved: x",
    }
    assert probe_problems(seen, list(seen)) == [
        "b:8000: unreachable: [Errno 113] No route to host (not a firewall verdict)",
        "c:1: unresolved: x (not a firewall verdict)",
    ]


def test_a_target_left_out_of_the_answer_fails() -> None:
    assert probe_problems({"a:443": "open"}, ["a:443", "b:22"]) == ["b:22: not probed"]


LB = "10.89.50.10"
LB_TARGETS = [f"{LB}:{p}" for p in (22, 80, 443, 5432, 8000)]


def old_lb_check(seen: dict[str, str]) -> bool:
    """test_90_security's former check: only the set of "open" ports was compared."""
    return {int(t.rsplit(":", 1)[1]) for t, v in seen.items() if v == "open"} == {80, 443}


def test_the_lb_verdict_map_is_80_and_443_open_and_every_other_port_dropped() -> None:
    assert expected_verdicts(LB_TARGETS, {80, 443}) == {
        f"{LB}:22": "timeout",
        f"{LB}:80": "open",
        f"{LB}:443": "open",
        f"{LB}:5432": "timeout",
        f"{LB}:8000": "timeout",
    }


@pytest.mark.parametrize("port", [22, 5432, 8000])
def test_a_port_the_firewall_lets_through_fails_where_the_old_check_passed(port: int) -> None:
    # Nothing listens on it, so it answers "refused": not open, but not dropped either.
    seen = expected_verdicts(LB_TARGETS, {80, 443}) | {f"{LB}:{port}": "refused"}
    assert old_lb_check(seen)
    assert seen != expected_verdicts(LB_TARGETS, {80, 443})


def test_a_real_unfiltered_port_is_refused_not_dropped() -> None:
    # Loopback has no firewall: a port without a listener answers "refused", which the exact
    # map rejects (the old check, counting "open" answers only, accepted it).
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        served, unfiltered = listener.getsockname()[1], free_port()
        targets = [f"127.0.0.1:{served}", f"127.0.0.1:{unfiltered}"]
        out = subprocess.run(
            ["bash", "-c", probe_command(targets)], capture_output=True, text=True, check=True
        )
    seen = json.loads(out.stdout)
    assert seen != expected_verdicts(targets, {served})
    assert seen == expected_verdicts(targets, {served}) | {targets[1]: "refused"}
