"""The lab's load generator (tests/lab/loadgen.py), on loopback only.

Against the real service under Gunicorn it must keep its timetable and see no failure; against
servers that fail (refused connections, 500s, dropped connections, silence) it must count every
failure; over TLS it must connect to the address it is told while SNI, Host and the certificate
check keep the name.
"""

from __future__ import annotations

import datetime
import http.server
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.helpers.cli import clean_env
from tests.helpers.gunicorn import run_gunicorn
from tests.helpers.net import blackhole_listener, free_port
from tests.lab.loadgen import LoadGenerator, LoadResult, Sample, parse_resolve, percentile

RELEASE = "loadgen-test-release"
LAB_NAME = "app.lab.test"


# -- a small scriptable HTTP(S) server -------------------------------------------------------


@dataclass
class StubState:
    behaviour: str = "ok"  # "ok", "500" or "close"
    release: str = "stub-1"
    hosts: list[str] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)
    next_id: int = 0
    stall_until: float = 0.0  # monotonic time until which every answer waits
    lock: threading.Lock = field(default_factory=threading.Lock)


class _StubHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as nginx offers it
    server: _StubServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self) -> None:
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        with state.lock:
            state.hosts.append(self.headers.get("Host", ""))
            state.next_id += 1
            note_id = state.next_id
        pause = state.stall_until - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        if state.behaviour == "close":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if state.behaviour == "500":
            status, body = 500, b'{"detail":"boom"}'
        elif self.command == "POST":
            status, body = 201, json.dumps({"id": note_id, "title": "loadgen"}).encode()
        else:
            status, body = 200, b"[]"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-App-Release", state.release)
        self.end_headers()
        self.wfile.write(body)

    do_GET = _answer
    do_POST = _answer


class _StubServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    state: StubState


@dataclass
class Stub:
    state: StubState
    port: int


StubFactory = Callable[..., Stub]


@pytest.fixture
def stub_factory() -> Iterator[StubFactory]:
    servers: list[_StubServer] = []

    def start(context: ssl.SSLContext | None = None) -> Stub:
        server = _StubServer(("127.0.0.1", 0), _StubHandler)
        server.state = StubState()
        if context is not None:
            context.sni_callback = lambda _sock, name, _ctx: server.state.server_names.append(name)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return Stub(server.state, server.server_address[1])

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


# -- certificates: a CA and a leaf for app.lab.test, like pebble's chain ---------------------


@dataclass
class Pki:
    ca_file: Path
    cert_file: Path
    key_file: Path
    other_ca_file: Path


def _make_pki(directory: Path) -> Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cert, key

    ca_cert, ca_key = ca("loadgen test CA")
    other_cert, _other_key = ca("some other CA")
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LAB_NAME)]))
        .issuer_name(ca_cert.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(LAB_NAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    pki = Pki(
        directory / "ca.pem", directory / "cert.pem", directory / "key.pem", directory / "other.pem"
    )
    pki.ca_file.write_bytes(ca_cert.public_bytes(pem))
    pki.other_ca_file.write_bytes(other_cert.public_bytes(pem))
    pki.cert_file.write_bytes(leaf.public_bytes(pem))
    pki.key_file.write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return _make_pki(tmp_path_factory.mktemp("pki"))


def _server_context(pki: Pki) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert_file, pki.key_file)
    return context


# -- the tests -------------------------------------------------------------------------------


def _count_notes(url: str) -> int:
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain) as connection:
        row = connection.execute("SELECT count(*) FROM notes").fetchone()
    assert row is not None
    return int(row[0])


def test_the_real_service_under_gunicorn_keeps_the_rate_with_no_failure(
    tmp_path: Path, migrated_database_url: str
) -> None:
    env = {"DATABASE_URL": migrated_database_url, "APP_RELEASE": RELEASE}
    with run_gunicorn(tmp_path, env=env, workers=2) as server:
        result = LoadGenerator(server.base_url, rate=100, duration=3).run()

    totals = result.totals()
    assert (totals["sent"], totals["failed"]) == (300, 0), result.summary()
    assert totals["by_status"].keys() <= {"200", "201"}
    assert set(totals["by_route"]) == {"list", "get", "create"}
    assert 20 <= totals["by_route"]["create"]["sent"] <= 150
    assert _count_notes(migrated_database_url) == totals["by_status"]["201"]
    assert 90 <= totals["achieved_rate"] <= 110, result.summary()

    rows = result.per_second()
    assert [row["second"] for row in rows] == [0, 1, 2]
    for row in rows:
        assert row["sent"] == 100, row
        assert row["ok"] == 100 and row["failed"] == 0
        assert row["releases"] == [RELEASE]
        assert row["release_counts"] == {RELEASE: 100}
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["max_ms"] < 2000
    assert result.releases()[0]["release"] == RELEASE
    assert result.releases()[0]["count"] == 300
    assert result.switch_time() is None


def test_tls_connects_to_the_given_address_with_the_name_for_sni_host_and_checks(
    stub_factory: StubFactory,
    pki: Pki,
) -> None:
    stub = stub_factory(_server_context(pki))
    url = f"https://{LAB_NAME}:{stub.port}"
    result = LoadGenerator(
        url, rate=50, duration=1, cafile=pki.ca_file, resolve={LAB_NAME: "127.0.0.1"}
    ).run()
    assert (result.sent, result.failed) == (50, 0), result.summary()
    assert set(stub.state.hosts) == {f"{LAB_NAME}:{stub.port}"}
    assert set(stub.state.server_names) == {LAB_NAME}
    # Keep-alive: far fewer TLS handshakes than requests.
    assert len(stub.state.server_names) <= 10

    # A certificate from a CA we do not trust is a failure, named as such.
    untrusted = LoadGenerator(
        url, rate=20, duration=0.5, cafile=pki.other_ca_file, resolve={LAB_NAME: "127.0.0.1"}
    ).run()
    assert untrusted.failed == untrusted.sent == 10
    assert untrusted.totals()["by_error"] == {"tls_error": 10}


def test_refused_connections_500s_and_dropped_connections_are_failures(
    stub_factory: StubFactory,
) -> None:
    refused = LoadGenerator(f"http://127.0.0.1:{free_port()}", rate=50, duration=1).run()
    assert (refused.sent, refused.failed) == (50, 50)
    assert refused.totals()["by_error"] == {"connect_error": 50}
    assert refused.per_second()[0]["failures"] == {"connect_error": 50}

    stub = stub_factory()
    stub.state.behaviour = "500"
    errors = LoadGenerator(f"http://127.0.0.1:{stub.port}", rate=50, duration=0.5).run()
    assert errors.totals()["by_status"] == {"500": 25}
    assert errors.failed == 25
    assert errors.failures()[0].detail == '{"detail":"boom"}'

    stub.state.behaviour = "close"
    dropped = LoadGenerator(f"http://127.0.0.1:{stub.port}", rate=50, duration=0.5).run()
    assert dropped.failed == dropped.sent == 25
    by_error = dropped.totals()["by_error"]
    assert sum(by_error.values()) == 25, by_error  # every failure is a dropped connection
    assert set(by_error) <= {"remote_protocol_error", "read_error"}, by_error


def test_a_server_that_never_answers_is_a_timeout_and_late_requests_are_not_held_back() -> None:
    with blackhole_listener() as port:
        result = LoadGenerator(
            f"http://127.0.0.1:{port}", rate=40, duration=1, timeout=0.3, max_connections=5
        ).run()
    assert result.failed == result.sent == 40
    assert result.totals()["by_error"] == {"timeout": 40}
    assert all(0.29 <= s.latency < 0.6 for s in result.samples)
    # Open loop: the silent server did not slow the timetable down.
    assert result.totals()["lag"]["max_ms"] < 100
    assert result.duration < 1.6


def test_a_one_second_server_stall_costs_latency_not_the_generator(
    stub_factory: StubFactory,
) -> None:
    """The lab's setting (200 req/s, a pool of rate x timeout connections): the generator
    must come out of a stall at once. httpx's pool did not - it spent a core on its own
    bookkeeping and answered nothing for the next 30 s."""
    stub = stub_factory()

    def stall() -> None:
        stub.state.stall_until = time.monotonic() + 1.0

    timer = threading.Timer(1.0, stall)
    timer.start()
    result = LoadGenerator(
        f"http://127.0.0.1:{stub.port}", rate=200, duration=4, max_connections=400
    ).run()
    timer.join()
    assert (result.sent, result.failed) == (800, 0), result.summary()
    rows = result.per_second()
    assert rows[1]["max_ms"] > 500, rows[1]  # the stall was felt
    assert rows[3]["p99_ms"] < 250, rows[3]  # and is over
    # The stub shares this process (and its GIL) with the generator: 200 answers released at
    # once may delay a few sends, but not half of them (httpx's pool: 402 late of 800).
    assert result.totals()["lag"]["late"] < 80, result.summary()


def test_the_generator_thread_runs_ahead_of_the_lab_hosts(stub_factory: StubFactory) -> None:
    """In the background, as the rollout tests run it, the generator's thread (and it alone) is
    under the real-time round-robin policy as root, and its result says so; under nice -5 only,
    a burst of answers from the lab kept it 100-300 ms off the cores."""
    stub = stub_factory()
    with LoadGenerator(f"http://127.0.0.1:{stub.port}", rate=50) as load:
        load.wait_for(10)
        (thread,) = [t for t in threading.enumerate() if t.name == "loadgen"]
        assert thread.native_id is not None
        policy = os.sched_getscheduler(thread.native_id)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER, "the caller's thread keeps its policy"
    root = os.geteuid() == 0
    assert load.result.priority == ("rr" if root else "none"), load.result.priority
    assert (policy == os.SCHED_RR) is root, policy
    assert load.result.to_dict(include_samples=False)["config"]["priority"] == load.result.priority
    assert f"generator ({load.result.priority})" in load.result.summary()


def test_a_connection_the_server_closed_while_idle_is_not_reused(
    stub_factory: StubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server drops a keep-alive connection after 0.1 s idle; requests come 0.25 s apart.
    monkeypatch.setattr(_StubHandler, "timeout", 0.1)
    stub = stub_factory()
    result = LoadGenerator(f"http://127.0.0.1:{stub.port}", rate=4, duration=2).run()
    assert (result.sent, result.failed) == (8, 0), result.summary()
    assert result.connections_opened == 8


def test_a_release_switch_is_seen_and_timed(stub_factory: StubFactory) -> None:
    stub = stub_factory()
    url = f"http://127.0.0.1:{stub.port}"

    def switch() -> None:
        stub.state.release = "stub-2"

    timer = threading.Timer(1.0, switch)
    with LoadGenerator(url, rate=100) as load:
        timer.start()
        time.sleep(2.0)
    timer.join()
    result = load.result
    assert result.failed == 0
    assert 180 <= result.sent <= 230, result.summary()
    releases = result.releases()
    assert [r["release"] for r in releases] == ["stub-1", "stub-2"]
    assert sum(r["count"] for r in releases) == result.sent
    switch_time = result.switch_time()
    assert switch_time is not None and 0.9 <= switch_time <= 1.3
    (change,) = result.switches()
    assert (change["from"], change["to"]) == ("stub-1", "stub-2")
    assert change["last_old"] <= change["first_new"] + 0.1
    seconds = result.per_second()
    assert seconds[0]["releases"] == ["stub-1"]
    assert seconds[0]["release_counts"] == {"stub-1": 100}
    assert seconds[-1]["releases"] == ["stub-2"]


def test_stop_ends_a_run_without_duration_promptly(stub_factory: StubFactory) -> None:
    stub = stub_factory()
    load = LoadGenerator(f"http://127.0.0.1:{stub.port}", rate=200).start()
    load.wait_for(50)
    before = time.monotonic()
    result = load.stop()
    assert time.monotonic() - before < 1.0
    assert isinstance(result, LoadResult)
    assert result.sent >= 50 and result.failed == 0


def test_write_json_keeps_everything_and_summary_is_short(
    stub_factory: StubFactory,
    tmp_path: Path,
) -> None:
    stub = stub_factory()
    result = LoadGenerator(f"http://127.0.0.1:{stub.port}", rate=50, duration=1).run()
    data = json.loads(result.write_json(tmp_path / "out" / "load.json").read_text())
    assert set(data) >= {
        "config",
        "started_at",
        "totals",
        "releases",
        "switches",
        "switch_time",
        "per_second",
        "failures",
        "samples",
    }
    assert data["totals"]["sent"] == len(data["samples"]["latency_ms"]) == 50
    assert set(data["per_second"][0]) >= {
        "second",
        "time",
        "sent",
        "ok",
        "failed",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "max_ms",
        "releases",
        "release_counts",
        "lag_max_ms",
        "failures",
    }
    summary = result.summary()
    assert "50 sent" in summary and "0 failed" in summary
    assert len(summary.splitlines()) <= 5


def test_the_command_line_writes_json_and_exits_1_on_failures(
    stub_factory: StubFactory,
    pki: Pki,
    tmp_path: Path,
    repo_root: Path,
) -> None:
    stub = stub_factory(_server_context(pki))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tests.lab.loadgen", *args],
            cwd=repo_root,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    out = tmp_path / "load.json"
    good = run(
        "--url",
        f"https://{LAB_NAME}:{stub.port}",
        "--rate",
        "40",
        "--duration",
        "0.5",
        "--cafile",
        str(pki.ca_file),
        "--resolve",
        f"{LAB_NAME}:127.0.0.1",
        "--out",
        str(out),
    )
    assert good.returncode == 0, good.stdout + good.stderr
    assert "20 sent" in good.stdout
    assert json.loads(out.read_text())["totals"]["ok"] == 20

    bad = run("--url", f"http://127.0.0.1:{free_port()}", "--rate", "20", "--duration", "0.5")
    assert bad.returncode == 1
    assert "connect_error" in bad.stdout


def test_helpers() -> None:
    assert parse_resolve(["app.lab.test:10.89.50.10"]) == {"app.lab.test": "10.89.50.10"}
    assert parse_resolve(["app.lab.test:443:10.89.50.10"]) == {"app.lab.test": "10.89.50.10"}
    with pytest.raises(ValueError, match="HOST:ADDRESS"):
        parse_resolve(["app.lab.test"])
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile(list(map(float, range(1, 101))), 99) == 99.0
    assert percentile([1.0, 2.0], 100) == 2.0
    with pytest.raises(ValueError, match="mix"):
        LoadGenerator("http://x", mix={"delete": 1.0})


def _result(lags_by_second: list[list[float]], latency: float = 0.01) -> LoadResult:
    """A run at 10 req/s whose request j of second i was sent lags_by_second[i][j] late."""
    samples = [
        Sample(index=i * 10 + j, route="list", due=i + j / 10, sent=i + j / 10 + lag,
               latency=latency if (i, j) != (2, 0) else 1.5, status=200)
        for i, lags in enumerate(lags_by_second)
        for j, lag in enumerate(lags)
    ]  # fmt: skip
    return LoadResult(url="http://x", rate=10, timeout=2.0, started_at=1000.0, samples=samples)


def test_the_generator_falling_behind_is_judged_per_second_not_averaged_away() -> None:
    on_time = [0.0] * 10
    one_bad_second = [on_time] * 30 + [[0.0] * 7 + [0.15] * 3] + [on_time] * 30
    result = _result(one_bad_second)
    # 3 late of 610 sent (0.5 %): a whole-run share would have absorbed it.
    assert result.totals()["lag"]["late"] == 3
    assert result.behind_seconds() == [30]
    assert result.totals()["generator_behind"] is True
    assert "GENERATOR FELL BEHIND: in seconds [30], 3 of 610 late" in result.summary()
    # A few requests 60 ms late in one second: reported, not a generator behind (the gap in
    # the timeline is shorter than BEHIND_LAG).
    jitter = _result([on_time] * 40 + [[0.06] * 3 + [0.0] * 7])
    assert jitter.behind_seconds() == [] and jitter.totals()["generator_behind"] is False
    assert "late requests by second: {40: 3}" in jitter.summary()
    # One request 300 ms late in a second is noise, not a generator behind.
    assert _result([on_time, [0.3] + [0.0] * 9]).behind_seconds() == []
    # A little late in every second (1 of 10, under the per-second share) adds up over the run.
    steady = _result([[0.06] + [0.0] * 9] * 30)
    assert steady.behind_seconds() == []
    assert steady.totals()["generator_behind"] is True


def test_the_worst_second_of_a_phase_is_the_one_with_the_highest_p99() -> None:
    result = _result([[0.0] * 10] * 5)
    worst = result.worst_second(1001.5, 1003.0)  # overlaps seconds 1 and 2
    assert worst is not None and worst["second"] == 2 and worst["max_ms"] == 1500.0
    assert result.worst_second(1003.0, 1004.0)["second"] == 3  # type: ignore[index]
    assert result.worst_second(2000.0, 2001.0) is None
