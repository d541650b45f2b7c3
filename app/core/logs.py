"""Structured JSON logs on stdout, one object per line.

``configure_logging`` is called from the application's lifespan (never at import), so importing
the package leaves the process's logging alone. Records from the standard library's ``logging``
(SQLAlchemy, Alembic, …) that reach the root logger are rendered as the same JSON.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

_HANDLER_MARK = "_fastapi_metal_handler"
_NAME_KEY = "_logger_name"


def _add_pid(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    # Under Gunicorn several workers share stdout; the pid says which one wrote the line.
    event_dict.setdefault("pid", os.getpid())
    return event_dict


def _logger_name(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    # get_logger(name) binds the name under a private key ("logger" is a reserved argument
    # of structlog.get_logger); it is written out as "logger".
    name = event_dict.pop(_NAME_KEY, None)
    if name is not None:
        event_dict.setdefault("logger", name)
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _logger_name,
        _add_pid,
    ]


class _CurrentStdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stdout`` is at the time of the record, not at configuration."""

    @property
    def stream(self) -> TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send structlog and standard-library records to ``stream`` as JSON lines.

    Without ``stream``, lines go to ``sys.stdout`` as it is when each line is written (so a
    later replacement of ``sys.stdout``, by a test runner for instance, is followed).
    """
    numeric_level = logging.getLevelNamesMapping()[level.upper()]

    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        # Not cached: tests (structlog.testing.capture_logs) and a second app in one process
        # may reconfigure, and module-level loggers must follow.
        cache_logger_on_first_use=False,
    )

    handler: logging.Handler = (
        logging.StreamHandler(stream) if stream is not None else _CurrentStdoutHandler()
    )
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *_shared_processors()],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.dict_tracebacks,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric_level)

    # The service writes its own access line (app.middleware); Uvicorn's would be a second one.
    logging.getLogger("uvicorn.access").disabled = True


def get_logger(name: str | None = None, **initial: Any) -> structlog.typing.FilteringBoundLogger:
    """A structlog logger; ``name`` becomes the ``logger`` field."""
    if name is not None:
        initial[_NAME_KEY] = name
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(**initial)
    return logger
