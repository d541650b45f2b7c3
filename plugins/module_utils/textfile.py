# Copyright: fastapi-metal maintainers
# MIT License (see LICENSE)
"""Metrics for the node exporter's textfile collector: a ``.prom`` file written whole and
renamed into place, so that a scrape never reads half of it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping


def label_set(labels: Mapping[str, object]) -> str:
    """``{a="1",b="x"}`` with Prometheus's escapes; empty when there are no labels."""
    if not labels:
        return ""
    parts = []
    for name, value in sorted(labels.items()):
        text = str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
        parts.append(f'{name}="{text}"')
    return "{" + ",".join(parts) + "}"


def write(path: str, help_lines: Iterable[str], samples: Iterable[str]) -> None:
    """Replace ``path`` (its directory is made when missing) with the HELP/TYPE lines and
    the samples, one per line."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".prom")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(f"{line}\n" for line in [*help_lines, *samples]))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
