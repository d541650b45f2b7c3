"""Request id, release header, the JSON access line and request metrics, in process."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from app.core.metrics import UNMATCHED_ROUTE
from tests.app.conftest import RELEASE, ClientFactory
from tests.helpers.prom import sample_sum
from tests.helpers.testclient import TestClient

HEX32 = re.compile(r"[0-9a-f]{32}")
ACCESS_FIELDS = {"event", "request_id", "method", "path", "status", "duration_ms", "release"}


def _access_lines(stdout: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == "request"]


def test_an_incoming_request_id_is_echoed(client: TestClient) -> None:
    response = client.get("/health", headers={"X-Request-ID": "lb-7f3a.2026:abc"})
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "lb-7f3a.2026:abc"


@pytest.mark.parametrize(
    "incoming",
    ["x" * 129, "has space", 'quote"d', "new\tline", "ünïcode", ""],
)
def test_an_insane_request_id_is_replaced(client: TestClient, incoming: str) -> None:
    response = client.get("/health", headers={"X-Request-ID": incoming.encode("utf-8")})
    assert response.status_code == 200
    assert HEX32.fullmatch(response.headers["X-Request-ID"])


def test_a_request_id_is_generated_per_request(client: TestClient) -> None:
    ids = {client.get("/health").headers["X-Request-ID"] for _request in range(3)}
    assert len(ids) == 3
    assert all(HEX32.fullmatch(i) for i in ids)


def test_a_request_id_of_128_characters_is_kept(client: TestClient) -> None:
    incoming = "a" * 128
    assert (
        client.get("/health", headers={"X-Request-ID": incoming}).headers["X-Request-ID"]
        == incoming
    )


def test_every_response_names_the_release(
    make_client: ClientFactory, migrated_database_url: str
) -> None:
    client = make_client(migrated_database_url, raise_server_exceptions=False)

    @client.app.get("/boom")  # type: ignore[attr-defined]
    async def boom() -> None:
        raise RuntimeError("kaput")

    responses = {
        200: client.get("/health"),
        201: client.post("/notes", json={"title": "t"}),
        404: client.get("/no/such/path"),
        405: client.put("/health"),
        422: client.post("/notes", json={"title": ""}),
        500: client.get("/boom"),
    }
    for status, response in responses.items():
        assert response.status_code == status
        assert response.headers["X-App-Release"] == RELEASE, status
        assert response.headers["X-Request-ID"], status
    assert responses[500].json() == {"detail": "Internal Server Error"}


def test_one_json_access_line_per_request(
    make_client: ClientFactory, migrated_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Logging is configured at startup, after capsys took over stdout: lines land there.
    client = make_client(migrated_database_url)
    capsys.readouterr()

    created = client.post("/notes", json={"title": "t"}, headers={"X-Request-ID": "req-1"})
    client.get(f"/notes/{created.json()['id']}?secret=not-logged")
    client.get("/nope")

    lines = _access_lines(capsys.readouterr().out)
    assert len(lines) == 3
    for line in lines:
        assert set(line) >= ACCESS_FIELDS, line
        assert line["level"] == "info"
        assert line["release"] == RELEASE
        assert isinstance(line["duration_ms"], float | int) and line["duration_ms"] >= 0
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", line["timestamp"])
    post, get, nope = lines
    assert (post["method"], post["path"], post["status"]) == ("POST", "/notes", 201)
    assert post["request_id"] == "req-1"
    assert (get["method"], get["status"], get["route"]) == ("GET", 200, "/notes/{note_id}")
    assert get["path"] == f"/notes/{created.json()['id']}"  # the query string is not logged
    assert "secret" not in json.dumps(get)
    assert HEX32.fullmatch(get["request_id"])
    assert (nope["status"], nope["route"]) == (404, UNMATCHED_ROUTE)


def test_app_logs_inside_a_request_carry_its_request_id(
    make_client: ClientFactory, pg_cluster: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.helpers.net import free_port

    client = make_client(pg_cluster.url("x", port=free_port()))
    capsys.readouterr()
    client.get("/health", headers={"X-Request-ID": "trace-me"})
    records = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    warning = [r for r in records if r["event"] == "health check failed"]
    assert len(warning) == 1
    assert warning[0]["request_id"] == "trace-me"
    assert warning[0]["level"] == "warning"


def test_metrics_count_requests_by_route_template_and_status(client: TestClient) -> None:
    def scrape() -> str:
        response = client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        return response.text

    before = scrape()
    note_id = client.post("/notes", json={"title": "m"}).json()["id"]
    for _request in range(3):
        assert client.get(f"/notes/{note_id}").status_code == 200
    assert client.get("/notes/987654").status_code == 404
    assert client.get("/scanner/wp-login.php").status_code == 404
    after = scrape()

    def delta(name: str, **labels: str) -> float:
        return sample_sum(after, name, **labels) - sample_sum(before, name, **labels)

    template = "/notes/{note_id}"
    assert delta("http_requests_total", method="GET", route=template, status="200") == 3
    assert delta("http_requests_total", method="GET", route=template, status="404") == 1
    assert delta("http_requests_total", method="POST", route="/notes", status="201") == 1
    assert delta("http_requests_total", route=UNMATCHED_ROUTE, status="404") == 1
    assert delta("http_request_duration_seconds_count", method="GET", route=template) == 4
    assert delta("http_request_duration_seconds_sum", method="GET", route=template) > 0
    # Raw paths never become labels.
    assert f'/notes/{note_id}"' not in after
    assert "wp-login" not in after
