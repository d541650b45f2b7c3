"""The fastapi_app role's Gunicorn worker class (roles/fastapi_app/templates/gunicorn_worker.py,
included in gunicorn.conf.py): a request sent on a connection the worker accepted just before
a graceful stop is answered, where uvicorn_worker's own worker resets it. Real Gunicorn, real
signals, a raw socket: the stock worker is the control that shows the probe sees a reset."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers.cli import clean_env
from tests.helpers.gunicorn import VENV_BIN
from tests.helpers.net import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "roles/fastapi_app/templates/gunicorn_worker.py"
APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"served"})
"""
# Uvicorn checks for a stop every 0.1 s and then closes idle connections at once; the
# request goes out well after that, and well within the role's worker's grace (1 s).
SEND_AFTER_SIGTERM_S = 0.35


@contextmanager
def gunicorn(
    tmp_path: Path, config: str, app: str = APP
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    (tmp_path / "asgi.py").write_text(app)
    (tmp_path / "gunicorn.conf.py").write_text(config)
    port = free_port()
    argv = [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "-w", "1",
            "-b", f"127.0.0.1:{port}", "--graceful-timeout", "5", "asgi:app"]  # fmt: skip
    log = (tmp_path / "gunicorn.log").open("wb")
    proc = subprocess.Popen(argv, cwd=tmp_path, env=clean_env(), stdout=log, stderr=log)
    try:
        wait_for_port(port, timeout=30)
        time.sleep(0.5)  # the worker is up and accepting, not only the master bound
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        log.close()


def request_across_a_stop(proc: subprocess.Popen[bytes], port: int) -> bytes:
    """Connect (the worker accepts), stop Gunicorn gracefully, then send the request."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        time.sleep(0.2)  # accepted by the worker's event loop
        os.kill(proc.pid, signal.SIGTERM)
        time.sleep(SEND_AFTER_SIGTERM_S)
        try:
            conn.sendall(b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 0\r\n\r\n")
            answer = b""
            while chunk := conn.recv(4096):  # the worker closes the connection once it answered
                answer += chunk
            return answer
        except ConnectionResetError:
            return b"reset"


def test_the_roles_worker_answers_a_request_sent_after_the_stop_began(tmp_path: Path) -> None:
    with gunicorn(tmp_path, WORKER.read_text()) as (proc, port):
        answer = request_across_a_stop(proc, port)
        assert proc.wait(timeout=10) == 0
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert b"served" in answer


def test_the_stock_worker_resets_it(tmp_path: Path) -> None:
    """The control: without the role's worker the same request is lost."""
    with gunicorn(tmp_path, 'worker_class = "uvicorn_worker.UvicornWorker"\n') as (proc, port):
        answer = request_across_a_stop(proc, port)
    assert answer in (b"", b"reset"), answer


@pytest.mark.parametrize("template", ["gunicorn.conf.py.j2"])
def test_the_config_template_includes_the_worker(template: str) -> None:
    text = (ROOT / "roles/fastapi_app/templates" / template).read_text()
    assert "{% include 'gunicorn_worker.py' %}" in text
    assert "worker_class" not in text  # the included file sets it


# --- bounded work: limit_concurrency and the request deadline --------------------------------

SLOW_APP = """
import asyncio

CALLS = []


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    CALLS.append(scope["path"])
    if scope["path"] == "/slow":
        await asyncio.sleep(1.0)
    body = str(len(CALLS)).encode()
    length = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": length})
    await send({"type": "http.response.body", "body": body})
"""


def bounded(limit: int, deadline: float, running: int = 0, queue: float = 0.0) -> str:
    return WORKER.read_text() + (
        f"\nWorker.limit_concurrency = {limit}\nWorker.request_deadline = {deadline}\n"
        f"Worker.max_running = {running}\nWorker.queue_timeout = {queue}\n"
    )


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[bytes, float]:
    """A raw HTTP/1.1 GET: the whole answer and how long it took."""
    lines = [f"GET {path} HTTP/1.1", "Host: app", "Connection: close"]
    if headers is None:  # as the edge sends it
        headers = {"X-Request-Start": f"t={time.time():.3f}"}
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
    return answer, time.monotonic() - t0


def concurrent_slow(port: int, count: int, edge: bool) -> list[bytes]:
    headers = None if edge else {}
    with ThreadPoolExecutor(count) as pool:
        answers = pool.map(lambda _i: get(port, "/slow", headers), range(count))
        return [answer for answer, _took in answers]


@pytest.mark.parametrize(("limit", "edge", "refused"), [(2, True, 1), (0, True, 0), (2, False, 0)])
def test_past_limit_concurrency_a_worker_answers_503_at_once(
    tmp_path: Path, limit: int, edge: bool, refused: int
) -> None:
    """Three slow requests at once on one worker, as the edge sends them: with a limit of 2
    the third is refused with a 503 and Retry-After; with no limit (the control) all three are
    served. Sent without the edge's X-Request-Start (a health gate, a probe), none is refused."""
    with gunicorn(tmp_path, bounded(limit, 0), SLOW_APP) as (_proc, port):
        answers = concurrent_slow(port, 3, edge)
    busy = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
    served = [a for a in answers if a.startswith(b"HTTP/1.1 200")]
    assert (len(busy), len(served)) == (refused, 3 - refused), answers
    for answer in busy:
        head = answer.lower()
        assert b"retry-after: 1" in head and b"x-refused: busy" in head, answer


def test_a_request_older_than_the_deadline_is_refused_without_running_the_app(
    tmp_path: Path,
) -> None:
    with gunicorn(tmp_path, bounded(0, 1.5), SLOW_APP) as (_proc, port):
        stale, took = get(port, "/", {"X-Request-Start": f"t={time.time() - 5:.3f}"})
        fresh, _took = get(port, "/", {"X-Request-Start": f"t={time.time():.3f}"})
        bare, _took = get(port, "/", {})
        junk, _took = get(port, "/", {"X-Request-Start": "yesterday"})
    head = stale.lower()
    assert head.startswith(b"http/1.1 503") and b"x-refused: late" in head, stale
    assert b"retry-after: 1" in head and took < 0.5, (stale, took)
    # The app ran for the fresh request only after the stale one was refused: it counts 1.
    assert fresh.startswith(b"HTTP/1.1 200") and fresh.endswith(b"1"), fresh
    assert bare.startswith(b"HTTP/1.1 200") and bare.endswith(b"2"), bare  # no header: no deadline
    assert junk.startswith(b"HTTP/1.1 200") and junk.endswith(b"3"), junk  # not a time: ignored


@pytest.mark.parametrize(
    ("running", "edge", "served_s"), [(1, True, 3.0), (0, True, 1.0), (1, False, 1.0)]
)
def test_past_max_running_requests_wait_their_turn_and_one_past_its_deadline_is_refused(
    tmp_path: Path, running: int, edge: bool, served_s: float
) -> None:
    """Three slow (1 s) requests at once, as the edge sends them, with one running at a time:
    they are served one after the other, none refused (the last after about 3 s). With no
    bound (the control), or without the edge's header, they run together (about 1 s)."""
    with gunicorn(tmp_path, bounded(8, 0, running), SLOW_APP) as (_proc, port):
        t0 = time.monotonic()
        answers = concurrent_slow(port, 3, edge)
        took = time.monotonic() - t0
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers), answers
    assert served_s - 0.3 < took < served_s + 0.7, took


def test_a_request_whose_turn_comes_after_its_deadline_is_refused_late(tmp_path: Path) -> None:
    """One running at a time, a 1.5 s deadline, three slow (1 s) requests at once: the first
    two are served (the second waited 1 s), the third's turn would come after 2 s: refused
    with "late" when its deadline passes, without running the app."""
    with gunicorn(tmp_path, bounded(8, 1.5, 1), SLOW_APP) as (_proc, port):
        answers = concurrent_slow(port, 3, edge=True)
    served = [a for a in answers if a.startswith(b"HTTP/1.1 200")]
    late = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
    assert (len(served), len(late)) == (2, 1), answers
    assert b"x-refused: late" in late[0].lower(), late


@pytest.mark.parametrize(("queue", "fresh_refused"), [(0.5, True), (0.0, False)])
def test_a_request_waits_its_turn_until_queue_timeout_after_the_edge_sent_it(
    tmp_path: Path, queue: float, fresh_refused: bool
) -> None:
    """One running at a time, queue_timeout 0.5 s. A (1 s) is the worker's first request; B
    comes at 0.3 s, sent by the edge 0.2 s earlier (it met a busy event loop on its way): its
    turn would come at 1 s, so it is refused "busy" when 0.5 s have passed since the edge sent
    it, about 0.3 s after it came, without running the app. C comes 0.1 s later but was
    sent before the worker took in its first request (it waited in the socket's backlog
    while the worker restarted: a burst, not overload): it waits its turn and is served after
    A. With no queue_timeout (the control) B is served too."""
    with (
        gunicorn(tmp_path, bounded(8, 0, 1, queue), SLOW_APP) as (_proc, port),
        ThreadPoolExecutor(3) as pool,
    ):
        a = pool.submit(get, port, "/slow")
        time.sleep(0.3)
        b = pool.submit(get, port, "/slow", {"X-Request-Start": f"t={time.time() - 0.2:.3f}"})
        # C after B is in (were C taken in first, B would wait behind a backlog request, and
        # its 0.5 s would count from when C got its turn: the test below).
        time.sleep(0.1)
        old = {"X-Request-Start": f"t={time.time() - 1:.3f}"}
        c = pool.submit(get, port, "/slow", old)
        (first, _t), (fresh, took), (backlog, _t2) = a.result(), b.result(), c.result()
    assert first.startswith(b"HTTP/1.1 200"), first
    assert backlog.startswith(b"HTTP/1.1 200"), backlog
    if fresh_refused:
        assert fresh.startswith(b"HTTP/1.1 503") and b"x-refused: busy" in fresh.lower(), fresh
        assert 0.15 < took < 0.45, took
        assert backlog.endswith(b"2"), backlog  # the app ran twice: B never reached it
    else:
        assert fresh.startswith(b"HTTP/1.1 200"), fresh


@pytest.mark.parametrize(("behind_backlog", "refused"), [(True, False), (False, True)])
def test_behind_a_restarts_backlog_queue_timeout_counts_from_when_the_backlog_had_its_turns(
    tmp_path: Path, behind_backlog: bool, refused: bool
) -> None:
    """One running at a time, queue_timeout 0.5 s. A (1 s) is the worker's first request; at
    0.1 s comes C (fast), sent before A was taken in (the backlog a restart held); at 0.2 s D
    (fast), sent by the edge then. Both wait for A. C is ahead of D, so D's 0.5 s count from
    when C got its turn (1 s): D is served at about 1 s, where a bound counted from when the
    edge sent D refuses it at 0.7 s. The control: C sent after A was taken in (no backlog
    ahead of D), D is refused "busy" at 0.7 s, 0.5 s after the edge sent it."""
    with (
        gunicorn(tmp_path, bounded(8, 0, 1, 0.5), SLOW_APP) as (_proc, port),
        ThreadPoolExecutor(3) as pool,
    ):
        t0 = time.time()
        a = pool.submit(get, port, "/slow")
        time.sleep(0.1)
        c_start = t0 - 1 if behind_backlog else time.time()
        c = pool.submit(get, port, "/", {"X-Request-Start": f"t={c_start:.3f}"})
        time.sleep(0.1)
        d = pool.submit(get, port, "/", {"X-Request-Start": f"t={time.time():.3f}"})
        (first, _t), (backlog, _t2), (fresh, took) = a.result(), c.result(), d.result()
    assert first.startswith(b"HTTP/1.1 200"), first
    if refused:  # C and D alike waited more than 0.5 s behind A
        assert fresh.startswith(b"HTTP/1.1 503") and b"x-refused: busy" in fresh.lower(), fresh
        assert 0.3 < took < 0.7, took
    else:
        assert backlog.startswith(b"HTTP/1.1 200"), backlog
        assert fresh.startswith(b"HTTP/1.1 200"), fresh
        assert 0.6 < took < 1.3, took
