"""Prometheus metrics for HTTP requests, correct under several Gunicorn workers.

prometheus_client picks single- or multi-process storage when it is imported, from the
``PROMETHEUS_MULTIPROC_DIR`` environment variable; so the variable must be in the environment
of the Gunicorn master before it starts (systemd ``Environment=``), not set later by the app.
In multiprocess mode every worker writes its samples to files in that directory and a scrape,
whichever worker answers it, aggregates all of them into a fresh registry.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

#: Route label for requests that matched no route (scanners): one series, not one per path.
UNMATCHED_ROUTE = "<unmatched>"

REQUESTS = Counter(
    "http_requests",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
)

REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from receiving a request to the end of its response, by method and route template.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    REQUESTS.labels(method=method, route=route, status=str(status)).inc()
    REQUEST_DURATION.labels(method=method, route=route).observe(seconds)


def render_metrics(multiproc_dir: Path | None) -> tuple[bytes, str]:
    """The exposition text and its content type.

    With ``multiproc_dir`` the samples of every worker, live or dead, are summed; a new registry
    per scrape is what prometheus_client's multiprocess documentation prescribes.
    """
    if multiproc_dir is not None:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(multiproc_dir))  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
