"""``app-migrate``: run the packaged Alembic migrations from an installed release.

Contract (what a deploy tool may rely on)::

    app-migrate upgrade [REV]   # REV defaults to "head"
    app-migrate downgrade REV   # e.g. "base" or "0001"
    app-migrate current
    app-migrate heads           # needs no database

On success the command prints exactly one JSON object on one line on stdout and exits 0:

* ``upgrade`` / ``downgrade``:
  ``{"event": "migrate", "action": "upgrade", "from": "0001", "to": "0002", "head": "0002",
  "changed": true}`` where ``from``/``to`` are the database's revision before and after
  (``null`` for an empty database) and ``changed`` is true only when the revision moved.
* ``current``: ``{"event": "current", "current": "0002", "head": "0002", "up_to_date": true}``
* ``heads``: ``{"event": "heads", "head": "0002", "heads": ["0002"]}``

Logs (JSON lines) go to stderr. On failure stdout stays empty, stderr ends with a line
``app-migrate: error: ...`` and the exit status is 2 for a configuration problem (for example
``DATABASE_URL`` missing) or 1 for anything else (database unreachable, migration failed).
The database URL comes from ``DATABASE_URL`` as for the service (``app.core.config``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from app.core.config import Settings, SettingsError, load_settings
from app.core.logs import configure_logging, get_logger
from app.db.engine import build_sync_engine
from app.db.migrations import alembic_config

EXIT_FAILURE = 1
EXIT_CONFIG = 2


def _one(revisions: Sequence[str] | None) -> str | None:
    """A single revision (or ``None`` for an empty database); branches joined by commas."""
    if not revisions:
        return None
    return ",".join(sorted(revisions))


def _heads() -> list[str]:
    return sorted(ScriptDirectory.from_config(alembic_config()).get_heads())


def _current(settings: Settings) -> list[str]:
    engine = build_sync_engine(settings)
    try:
        with engine.connect() as connection:
            return sorted(MigrationContext.configure(connection).get_current_heads())
    finally:
        engine.dispose()


def migrate(settings: Settings, action: str, revision: str) -> dict[str, Any]:
    """Upgrade or downgrade to ``revision``; the result is the JSON line ``main`` prints."""
    config = alembic_config(settings)
    if action == "upgrade":
        command.upgrade(config, revision)
    else:
        command.downgrade(config, revision)
    before = _one(config.attributes.get("revision_before"))
    after = _one(config.attributes.get("revision_after"))
    return {
        "event": "migrate",
        "action": action,
        "from": before,
        "to": after,
        "head": _one(_heads()),
        "changed": before != after,
    }


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="app-migrate",
        description="Run the service's packaged database migrations (reads DATABASE_URL).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    upgrade = sub.add_parser("upgrade", help="upgrade the database (default: to head)")
    upgrade.add_argument("revision", nargs="?", default="head")
    downgrade = sub.add_parser("downgrade", help="downgrade the database to REV (or 'base')")
    downgrade.add_argument("revision")
    sub.add_parser("current", help="print the database's revision")
    sub.add_parser("heads", help="print the head revision shipped in this release")
    return parser


def _describe(exc: BaseException) -> str:
    """One line: libpq spreads its messages over several."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        text = f"database error: {exc.orig}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse ``argv`` and do the work; the result is what ``main`` prints."""
    args = _build_parser().parse_args(argv)
    if args.command == "heads":
        heads = _heads()
        return {"event": "heads", "head": _one(heads), "heads": heads}
    settings = load_settings()
    if args.command == "current":
        current, head = _one(_current(settings)), _one(_heads())
        return {"event": "current", "current": current, "head": head, "up_to_date": current == head}
    return migrate(settings, args.command, args.revision)


def main(argv: Sequence[str] | None = None) -> int:
    level = os.environ.get("LOG_LEVEL", "INFO").strip().upper()
    configure_logging(
        level if level in {"DEBUG", "WARNING", "ERROR", "CRITICAL"} else "INFO", stream=sys.stderr
    )
    try:
        result = run(argv)
    except SettingsError as exc:
        print(f"app-migrate: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (CommandError, SQLAlchemyError, OSError) as exc:
        print(f"app-migrate: error: {_describe(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:  # a bug in a revision: keep the traceback, still say what failed
        get_logger("app.migrate").exception("migration failed")
        print(f"app-migrate: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(json.dumps(result, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
