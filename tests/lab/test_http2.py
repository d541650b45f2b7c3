"""The load generator's HTTP/2 client (tests/lab/http2.py), against a small HTTP/2 server
over TLS on loopback (h2's server side): requests are streams multiplexed on one connection,
the name stays the SNI, :authority and the certificate's; answers keep their status and
headers; a server that does not speak HTTP/2, a reset stream and a GOAWAY are failures with
their own names, never answers."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest

from tests.lab.http1 import RequestError
from tests.lab.http2 import Pool
from tests.lab.loadgen import LoadGenerator
from tests.lab.test_loadgen import LAB_NAME, Pki, StubFactory, _server_context

pytest_plugins = ["tests.lab.test_loadgen"]


@dataclass
class H2State:
    authorities: list[str] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)
    connections: int = 0
    # After this many streams a connection is sent a GOAWAY (0: never).
    goaway_after: int = 0


class H2Stub:
    """Answers 200 (X-App-Release: h2-stub), "/busy" 503 with X-Refused, "/reset" with a
    reset stream."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.state = H2State()
        context.set_alpn_protocols(["h2"])
        context.sni_callback = lambda _sock, name, _ctx: self.state.server_names.append(name)
        self.context = context
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=10)

    async def _start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        self.port = self.server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.state.connections += 1
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        streams = 0
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        streams += 1
                        headers = dict(event.headers or ())
                        self.state.authorities.append(str(headers[":authority"]))
                        self._answer(conn, event.stream_id, str(headers[":path"]))
                        if self.state.goaway_after and streams >= self.state.goaway_after:
                            conn.close_connection(last_stream_id=event.stream_id)
                    elif isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        finally:
            writer.close()

    @staticmethod
    def _answer(conn: h2.connection.H2Connection, stream_id: int, path: str) -> None:
        if path == "/reset":
            conn.reset_stream(stream_id)
            return
        status, extra = ("503", [("x-refused", "busy")]) if path == "/busy" else ("200", [])
        body = b'{"ok": true}'
        conn.send_headers(
            stream_id,
            [(":status", status), ("content-length", str(len(body))),
             ("x-app-release", "h2-stub"), *extra],
        )  # fmt: skip
        conn.send_data(stream_id, body, end_stream=True)


@pytest.fixture
def h2_stub(pki: Pki) -> Iterator[H2Stub]:
    stub = H2Stub(_server_context(pki))
    yield stub
    stub.stop()


def test_the_generator_speaks_http2_on_one_connection_with_the_name_for_sni_and_authority(
    h2_stub: H2Stub, pki: Pki
) -> None:
    url = f"https://{LAB_NAME}:{h2_stub.port}"
    result = LoadGenerator(
        url, rate=100, duration=1, cafile=pki.ca_file, resolve={LAB_NAME: "127.0.0.1"},
        paths=["/a", "/b"], http2=True,
    ).run()  # fmt: skip
    assert (result.sent, result.failed) == (100, 0), result.summary()
    assert result.protocol == "h2" and "(h2)" in result.summary()
    assert {s.release for s in result.samples} == {"h2-stub"}
    # Multiplexed: one TLS handshake for every request.
    assert result.connections_opened == 1 and h2_stub.state.connections == 1
    assert set(h2_stub.state.server_names) == {LAB_NAME}
    assert set(h2_stub.state.authorities) == {f"{LAB_NAME}:{h2_stub.port}"}


def test_a_server_that_does_not_speak_http2_is_a_failure_not_an_answer(
    stub_factory: StubFactory, pki: Pki
) -> None:
    """The HTTP/1.1 stub answers every HTTP/1.1 request (test_loadgen); offered h2 only, it
    agrees on no protocol: every request fails as "alpn"."""
    stub = stub_factory(_server_context(pki))
    url = f"https://{LAB_NAME}:{stub.port}"
    resolve = {LAB_NAME: "127.0.0.1"}
    http1 = LoadGenerator(
        url, rate=20, duration=0.5, cafile=pki.ca_file, resolve=resolve, paths=["/a"]
    ).run()
    assert (http1.sent, http1.failed) == (10, 0), http1.summary()
    h2_run = LoadGenerator(
        url, rate=20, duration=0.5, cafile=pki.ca_file, resolve=resolve, paths=["/a"], http2=True
    ).run()
    assert h2_run.failed == h2_run.sent == 10
    assert h2_run.totals()["by_error"] == {"alpn": 10}


def test_statuses_headers_resets_and_goaway_reach_the_caller(h2_stub: H2Stub, pki: Pki) -> None:
    context = ssl.create_default_context(cafile=str(pki.ca_file))

    async def exchange() -> tuple[int, str, str, list[str]]:
        pool = Pool("https", LAB_NAME, h2_stub.port, connect_to="127.0.0.1", ssl_context=context)
        try:
            busy = await pool.request("GET", "/busy")
            with pytest.raises(RequestError) as reset:
                await pool.request("GET", "/reset")
            # A GOAWAY after the next stream: that stream is answered, the one after goes
            # to a new connection.
            h2_stub.state.goaway_after = 1
            outcomes = []
            for _attempt in range(3):
                try:
                    outcomes.append(str((await pool.request("GET", "/a")).status))
                except RequestError as exc:
                    outcomes.append(exc.kind)
            return busy.status, busy.headers.get("x-refused", ""), reset.value.kind, outcomes
        finally:
            pool.close()

    status, refused, reset_kind, outcomes = asyncio.run(exchange())
    assert (status, refused) == (503, "busy")
    assert reset_kind == "stream_reset"
    assert outcomes == ["200", "200", "200"], outcomes
    assert h2_stub.state.connections >= 2, "the streams after a GOAWAY went to a new connection"
