"""The service under a real Gunicorn with two Uvicorn workers, and the hooks it uses."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from app.gunicorn_hooks import child_exit, on_starting
from tests.helpers.gunicorn import run_gunicorn
from tests.helpers.prom import sample_sum

RELEASE = "gunicorn-test-release"
MIN_REQUESTS = 40


def _get_on_a_new_connection(url: str, request_id: str) -> httpx.Response:
    # No shared client: every request opens its own connection, so any worker may take it.
    return httpx.get(url, headers={"X-Request-ID": request_id}, timeout=10)


def test_metrics_sum_every_worker_whichever_worker_answers_the_scrape(
    tmp_path: Path, database_url: str
) -> None:
    multiproc_dir = tmp_path / "prom"
    multiproc_dir.mkdir()
    stale = multiproc_dir / "counter_999999.db"
    stale.write_bytes(b"left over from a previous run")
    env = {
        "DATABASE_URL": database_url,
        "APP_RELEASE": RELEASE,
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir),
    }
    with run_gunicorn(tmp_path, env=env, workers=2) as server:
        assert not stale.exists(), "on_starting should clear the previous run's files"
        url = f"{server.base_url}/health"

        # Send at least 40 requests, and keep going until both workers have answered some.
        sent: list[httpx.Response] = []
        with ThreadPoolExecutor(max_workers=8) as pool:
            while len(sent) < 400:
                batch = [f"load-{len(sent) + i}" for i in range(MIN_REQUESTS)]
                sent += pool.map(lambda rid: _get_on_a_new_connection(url, rid), batch)
                pids = {
                    line["pid"]
                    for line in server.access_lines()
                    if line["request_id"].startswith("load-")
                }
                if len(sent) >= MIN_REQUESTS and len(pids) == 2:
                    break
        assert all(r.status_code == 200 for r in sent)
        assert {r.headers["X-App-Release"] for r in sent} == {RELEASE}
        assert len(pids) == 2, f"one worker answered everything\n{server.logs()}"

        # A worker counts and logs a request just after answering it: wait for the last lines.
        ids = {r.headers["X-Request-ID"] for r in sent}
        deadline = time.monotonic() + 10
        while not ids <= {line["request_id"] for line in server.access_lines()}:
            assert time.monotonic() < deadline, server.logs()
            time.sleep(0.05)
        # Also counts the startup poll's /health requests.
        expected = sum(
            1
            for line in server.access_lines()
            if (line["path"], line["status"]) == ("/health", 200)
        )
        assert expected >= len(sent)

        # Each scrape may land on either worker; every one must see every worker's count.
        scrapes = [_get_on_a_new_connection(f"{server.base_url}/metrics", "s") for _n in range(6)]
        for scrape in scrapes:
            assert scrape.status_code == 200
            total = sample_sum(
                scrape.text, "http_requests_total", method="GET", route="/health", status="200"
            )
            assert total == expected
            assert (
                sample_sum(scrape.text, "http_request_duration_seconds_count", route="/health")
                == expected
            )

        access = server.access_lines()
        # Exactly one access line per request, carrying the request id the client sent.
        by_id = Counter(line["request_id"] for line in access)
        assert all(by_id[r.headers["X-Request-ID"]] == 1 for r in sent)
        assert {r.headers["X-Request-ID"] for r in sent} == {f"load-{i}" for i in range(len(sent))}
        line = next(line for line in access if line["request_id"] == "load-0")
        assert line["event"] == "request"
        assert (line["method"], line["path"], line["status"]) == ("GET", "/health", 200)
        assert line["release"] == RELEASE
        assert line["level"] == "info"
        assert isinstance(line["duration_ms"], float)
        assert line["timestamp"].endswith("Z")
        assert line["pid"] in pids
        # uvicorn's own access log is off: every line on stdout is JSON.
        assert all(raw.startswith("{") for raw in server.stdout_path.read_text().splitlines())


class _Worker:
    def __init__(self, pid: int) -> None:
        self.pid = pid


def test_child_exit_forgets_a_dead_workers_live_gauges_but_keeps_its_counters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    for name in ("gauge_livesum_4242.db", "gauge_all_4242.db", "counter_4242.db"):
        (tmp_path / name).write_bytes(b"")
    child_exit(None, _Worker(4242))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter_4242.db", "gauge_all_4242.db"]


@pytest.mark.parametrize("value", [None, "", " "])
def test_hooks_do_nothing_without_multiprocess_mode(
    value: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is None:
        monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    else:
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", value)
    # Metric files where a directory taken as "" or "." would point: they must stay.
    monkeypatch.chdir(tmp_path)
    seeded = ["counter_1.db", "gauge_livesum_1.db"]
    for name in seeded:
        (tmp_path / name).write_bytes(b"")
    on_starting(None)
    child_exit(None, _Worker(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == seeded


def test_on_starting_removes_only_metric_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    for name in ("counter_1.db", "histogram_2.db", "gauge_livesum_3.db", "keep.db", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    on_starting(None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.db", "notes.txt"]
