"""A small HTTP/2 client pool for the load generator: asyncio streams + h2, the same interface
as tests/lab/http1.py's ``Pool`` (``request()`` -> ``Response``, ``opened``, ``close()``).

Requests are streams multiplexed on few TLS connections (ALPN ``h2``), as browsers and most
HTTP/2 clients do: a connection takes new streams up to the server's
``SETTINGS_MAX_CONCURRENT_STREAMS`` (nginx: 128), then another connection opens, up to
``max_connections``. One reader task per connection hands each stream's answer to its
request. A request is never retried: a stream the server reset (``stream_reset``), one past
the last stream a GOAWAY admitted (``goaway``), a connection lost with its streams in flight
(``read_error``) all fail as a ``RequestError``; a GOAWAY lets the streams it admitted finish
and sends new ones on another connection (how nginx closes connections on a reload).
Cancelling a request (a time limit) resets its stream, not the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from tests.lab.http1 import READ_CHUNK, RequestError, Response, connect


class _Stream:
    __slots__ = ("chunks", "done", "headers", "status")

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []
        self.done: asyncio.Future[Response] = asyncio.get_running_loop().create_future()


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.streams: dict[int, _Stream] = {}
        self.closed = False  # no new streams: GOAWAY received, or the connection is gone
        self.h2.initiate_connection()
        self.flush()
        self.reading = asyncio.ensure_future(self._read())

    def has_room(self) -> bool:
        limit = self.h2.remote_settings.max_concurrent_streams
        return not self.closed and len(self.streams) < limit

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.writer.transport.is_closing():
            self.writer.write(data)

    def fail_all(self, kind: str, message: str, after: int = 0) -> None:
        for stream_id in [s for s in self.streams if s > after]:
            stream = self.streams.pop(stream_id)
            if not stream.done.done():
                stream.done.set_exception(RequestError(kind, message))

    def close(self) -> None:
        self.closed = True
        self.reading.cancel()
        self.writer.transport.abort()
        self.fail_all("read_error", "the connection was closed")

    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.read(READ_CHUNK)
                if not data:
                    self.closed = True
                    self.fail_all("read_error", "the server closed the connection")
                    return
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    self.closed = True
                    self.fail_all("remote_protocol_error", str(exc))
                    self.writer.transport.abort()
                    return
                for event in events:
                    self._handle(event)
                self.flush()
        except (OSError, asyncio.IncompleteReadError) as exc:
            self.closed = True
            self.fail_all("read_error", f"reading answers: {exc}")

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                headers = {str(k).lower(): str(v) for k, v in event.headers or ()}
                stream.status = int(headers.pop(":status", "0"))
                stream.headers = headers
        elif isinstance(event, h2.events.DataReceived):
            if event.flow_controlled_length:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            stream = self.streams.get(event.stream_id)
            if stream is not None and event.data:
                stream.chunks.append(bytes(event.data))
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None and not stream.done.done():
                stream.done.set_result(
                    Response(stream.status, stream.headers, b"".join(stream.chunks))
                )
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None and not stream.done.done():
                stream.done.set_exception(
                    RequestError("stream_reset", f"stream reset, error {event.error_code!r}")
                )
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.closed = True  # the streams up to last_stream_id still get their answers
            self.fail_all(
                "goaway",
                f"GOAWAY {event.error_code!r} before this stream was admitted",
                after=event.last_stream_id or 0,
            )


class Pool:
    """Multiplexed HTTP/2 over TLS to one origin (``connect_to`` as in http1.Pool)."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        *,
        connect_to: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 8,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if scheme != "https":
            raise ValueError(f"HTTP/2 here is over TLS (ALPN h2): https, not {scheme!r}")
        self.host = host
        self.port = port
        self.connect_to = connect_to or host
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.ssl_context.set_alpn_protocols(["h2"])
        self.authority = host if port == 443 else f"{host}:{port}"
        self.headers = [(k.lower(), v) for k, v in (headers or {}).items()]
        self.max_connections = max_connections
        self._connections: list[_Connection] = []
        self._opening: asyncio.Lock | None = None
        #: Connections opened so far (each one a TCP and a TLS handshake).
        self.opened = 0

    async def request(
        self,
        method: str,
        target: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        connection = await self._connection()
        request_headers = [
            (":method", method), (":path", target), (":scheme", "https"),
            (":authority", self.authority), *self.headers,
            *((k.lower(), v) for k, v in (headers or {}).items()),
        ]  # fmt: skip
        if body is not None:
            request_headers.append(("content-length", str(len(body))))
        stream = _Stream()
        try:
            stream_id = connection.h2.get_next_available_stream_id()
            connection.h2.send_headers(stream_id, request_headers, end_stream=not body)
            if body:
                connection.h2.send_data(stream_id, body, end_stream=True)
            connection.streams[stream_id] = stream
            connection.flush()
        except (h2.exceptions.ProtocolError, OSError) as exc:
            connection.closed = True
            raise RequestError("write_error", f"sending the request: {exc}") from exc
        try:
            return await stream.done
        except asyncio.CancelledError:
            if connection.streams.pop(stream_id, None) is not None and not connection.closed:
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    connection.h2.reset_stream(stream_id)
                    connection.flush()
            raise

    def close(self) -> None:
        while self._connections:
            self._connections.pop().close()

    async def _connection(self) -> _Connection:
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:  # one handshake at a time: a burst shares the new one
            self._connections = [c for c in self._connections if not (c.closed and not c.streams)]
            for connection in self._connections:
                if connection.has_room():
                    return connection
            if len(self._connections) >= self.max_connections:
                raise RequestError("pool_full", f"{self.max_connections} connections are full")
            connection = await self._open()
            self._connections.append(connection)
            return connection

    async def _open(self) -> _Connection:
        self.opened += 1
        reader, writer = await connect(self.connect_to, self.port, self.host, self.ssl_context)
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            writer.transport.abort()
            raise RequestError("alpn", f"{self.host} did not agree to HTTP/2 (ALPN h2)")
        return _Connection(reader, writer)
