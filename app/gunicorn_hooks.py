"""Gunicorn server hooks for the service; import them into a Gunicorn config file::

    # gunicorn.conf.py
    from app.gunicorn_hooks import child_exit, on_starting  # noqa: F401

or use this module as the config itself: ``gunicorn -c python:app.gunicorn_hooks ...``.

They matter only in prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set in
the master's environment) and do nothing otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from prometheus_client import multiprocess

# The files prometheus_client writes: counter_<pid>.db, histogram_<pid>.db, gauge_*_<pid>.db …
_METRIC_FILE_PREFIXES = ("counter_", "gauge_", "histogram_", "summary_")


class _Worker(Protocol):
    pid: int


def _multiproc_dir() -> Path | None:
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
    return Path(value) if value else None


def on_starting(server: object) -> None:
    """Master start: drop the previous run's sample files (prometheus_client asks for this).

    Not called on a HUP reload, so counters survive a graceful reload of the workers.
    """
    directory = _multiproc_dir()
    if directory is None or not directory.is_dir():
        return
    for path in directory.glob("*.db"):
        if path.name.startswith(_METRIC_FILE_PREFIXES):
            path.unlink(missing_ok=True)


def child_exit(server: object, worker: _Worker) -> None:
    """A worker exited: forget its live gauges (its counters stay counted)."""
    directory = _multiproc_dir()
    if directory is not None:
        multiprocess.mark_process_dead(worker.pid, str(directory))  # type: ignore[no-untyped-call]
