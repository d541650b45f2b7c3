"""configure_logging: JSON lines for structlog and standard-library records alike."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from app.core.logs import configure_logging, get_logger


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging("INFO", stream=out)
    yield out
    configure_logging("INFO")  # back to stdout for the tests that follow


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_structlog_events_are_json_with_level_timestamp_and_logger(stream: io.StringIO) -> None:
    get_logger("app.test").info("hello", answer=42)
    (line,) = _lines(stream)
    assert line["event"] == "hello"
    assert line["answer"] == 42
    assert line["level"] == "info"
    assert line["logger"] == "app.test"
    assert isinstance(line["pid"], int)
    assert str(line["timestamp"]).endswith("Z")


def test_standard_library_records_are_json_too(stream: io.StringIO) -> None:
    logging.getLogger("alembic.runtime.migration").info("Running upgrade %s -> %s", "a", "b")
    (line,) = _lines(stream)
    assert line["event"] == "Running upgrade a -> b"
    assert line["logger"] == "alembic.runtime.migration"
    assert line["level"] == "info"


def test_level_filters(stream: io.StringIO) -> None:
    configure_logging("WARNING", stream=stream)
    get_logger().info("quiet")
    logging.getLogger("x").info("quiet too")
    get_logger().warning("loud")
    assert [line["event"] for line in _lines(stream)] == ["loud"]


def test_context_variables_are_merged(stream: io.StringIO) -> None:
    structlog.contextvars.bind_contextvars(request_id="abc")
    try:
        get_logger().info("inside")
    finally:
        structlog.contextvars.clear_contextvars()
    assert _lines(stream)[0]["request_id"] == "abc"


def test_uvicorn_access_log_is_silenced_so_each_request_logs_once(stream: io.StringIO) -> None:
    assert logging.getLogger("uvicorn.access").disabled


def test_reconfiguring_does_not_stack_handlers(stream: io.StringIO) -> None:
    configure_logging("INFO", stream=stream)
    configure_logging("INFO", stream=stream)
    logging.getLogger("y").warning("once")
    assert len(_lines(stream)) == 1
