"""A small HTTP/1.1 keep-alive client pool for the load generator: asyncio streams + h11.

Why not httpx: under an open-loop load its connection pool does work proportional to the
number of connections and waiting requests for every request. After a one-second server stall
at 200 req/s (400 connections) the generator spent a whole core in the pool and never
recovered: 0 answers for the 30 s that followed while the server was idle (measured on the
lab, 2026-11-25). Here taking and returning a connection is O(1): a stack of idle connections
(the most recently used first, so few connections stay warm), a semaphore for the limit.

One ``Pool`` talks to one origin. ``connect_to`` is the address to connect to; the URL's host
stays the Host header, the TLS SNI and the name the certificate is checked against. A request
is never retried: whatever goes wrong is raised as a ``RequestError`` with a short ``kind``
(``connect_error``, ``tls_error``, ``write_error``, ``read_error``, ``remote_protocol_error``).
Cancelling a request (a time limit) closes its connection.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass

import h11

READ_CHUNK = 65536


class RequestError(Exception):
    """A request that got no complete answer; ``kind`` says at which step."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]  # names in lower case; a repeated header keeps its last value
    body: bytes


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    protocol: h11.Connection
    idle_since: float = 0.0

    def usable(self, now: float, expiry: float) -> bool:
        """False when the server closed it while it was idle, or it idled too long (a server
        closes idle connections after its own keep-alive timeout: nginx 65 s)."""
        return (
            not self.writer.transport.is_closing()
            and not self.reader.at_eof()
            and now - self.idle_since < expiry
        )

    def close(self) -> None:
        self.writer.transport.abort()


async def connect(
    connect_to: str, port: int, host: str, ssl_context: ssl.SSLContext | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP (and, with a context, TLS) connection to ``connect_to``, the certificate checked
    against ``host``; what fails is a ``RequestError`` (``tls_error``, ``connect_error``)."""
    try:
        return await asyncio.open_connection(
            connect_to, port, ssl=ssl_context,
            server_hostname=host if ssl_context is not None else None, limit=READ_CHUNK,
        )  # fmt: skip
    except ssl.SSLError as exc:
        raise RequestError("tls_error", f"TLS handshake with {host}: {exc}") from exc
    except OSError as exc:
        raise RequestError("connect_error", f"connect to {connect_to}:{port}: {exc}") from exc


class Pool:
    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        *,
        connect_to: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 100,
        keepalive_expiry: float = 30.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if scheme not in ("http", "https"):
            raise ValueError(f"scheme must be http or https, not {scheme!r}")
        self.scheme = scheme
        self.host = host
        self.port = port
        self.connect_to = connect_to or host
        self.ssl_context = ssl_context if scheme == "https" else None
        if scheme == "https" and self.ssl_context is None:
            self.ssl_context = ssl.create_default_context()
        self.keepalive_expiry = keepalive_expiry
        default_port = 443 if scheme == "https" else 80
        self.host_header = host if port == default_port else f"{host}:{port}"
        self.headers = list((headers or {}).items())
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)
        #: Connections opened so far (each one a TCP and, over https, a TLS handshake).
        self.opened = 0

    async def request(
        self,
        method: str,
        target: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        async with self._slots:
            connection = self._take_idle()
            if connection is None:
                connection = await self._open()
            reusable = False
            try:
                response, reusable = await self._exchange(connection, method, target, body, headers)
                return response
            finally:
                if reusable:
                    connection.idle_since = time.monotonic()
                    self._idle.append(connection)
                else:
                    connection.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    # -- internals --------------------------------------------------------------------------

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if connection.usable(now, self.keepalive_expiry):
                return connection
            connection.close()
        return None

    async def _open(self) -> _Connection:
        self.opened += 1
        reader, writer = await connect(self.connect_to, self.port, self.host, self.ssl_context)
        return _Connection(reader, writer, h11.Connection(our_role=h11.CLIENT))

    async def _exchange(
        self,
        connection: _Connection,
        method: str,
        target: str,
        body: bytes | None,
        headers: Mapping[str, str] | None,
    ) -> tuple[Response, bool]:
        protocol = connection.protocol
        request_headers = [("Host", self.host_header), *self.headers]
        request_headers += list((headers or {}).items())
        if body is not None:
            request_headers.append(("Content-Length", str(len(body))))
        try:
            data = protocol.send(h11.Request(method=method, target=target, headers=request_headers))
            if body:
                data = (data or b"") + (protocol.send(h11.Data(data=body)) or b"")
            data = (data or b"") + (protocol.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError as exc:
            raise RequestError("local_protocol_error", str(exc)) from exc
        try:
            connection.writer.write(data)
            await connection.writer.drain()
        except OSError as exc:  # ssl.SSLError included
            raise RequestError("write_error", f"sending the request: {exc}") from exc

        status = 0
        response_headers: dict[str, str] = {}
        chunks: list[bytes] = []
        while True:
            try:
                event = protocol.next_event()
            except h11.RemoteProtocolError as exc:
                raise RequestError("remote_protocol_error", str(exc)) from exc
            if event is h11.NEED_DATA:
                try:
                    raw = await connection.reader.read(READ_CHUNK)
                except OSError as exc:
                    raise RequestError("read_error", f"reading the answer: {exc}") from exc
                protocol.receive_data(raw)  # b"" is the end of the stream
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                response_headers = {
                    name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers
                }
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise RequestError(
                    "remote_protocol_error", "the server closed the connection without an answer"
                )
        reusable = protocol.our_state is h11.DONE and protocol.their_state is h11.DONE
        if reusable:
            protocol.start_next_cycle()
        return Response(status, response_headers, b"".join(chunks)), reusable
