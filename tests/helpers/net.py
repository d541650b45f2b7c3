"""Loopback networking helpers for tests: free ports, waiting for a port or an HTTP answer."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as exc:
            # Refused: nothing listens yet. Any other error (a name that does not resolve, no
            # route) is named: it is not "nothing listens".
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{host}:{port} not accepting connections after {timeout}s; last error: {exc!r}"
                ) from exc
            time.sleep(0.05)


def wait_for_http(
    url: str,
    timeout: float = 30.0,
    ok: Callable[[httpx.Response], bool] = lambda r: r.status_code < 500,
    alive: Callable[[], bool] = lambda: True,
) -> httpx.Response:
    """Poll ``url`` until ``ok(response)``; ``alive()`` false (a server that died) stops early."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"server died while waiting for {url} (last: {last!r})")
        try:
            response = httpx.get(url, timeout=2.0)
        except httpx.HTTPError as exc:
            last = exc
        else:
            if ok(response):
                return response
            last = response
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout}s (last: {last!r})")


@contextlib.contextmanager
def blackhole_listener(host: str = "127.0.0.1") -> Iterator[int]:
    """A port that accepts TCP connections (kernel backlog) but never answers a byte.

    A client that connects there hangs in the protocol handshake until its own timeout: the
    shape of a wedged or firewalled-after-connect database.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        sock.listen(64)  # never accept(): connections complete in the backlog and then hang
        yield int(sock.getsockname()[1])


@contextlib.contextmanager
def loopback_http(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """An HTTP server on a free loopback port answering with ``handler``, in a thread;
    yields ``127.0.0.1:PORT``."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
