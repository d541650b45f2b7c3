"""``app-migrate``: run the packaged Alembic migrations from an installed release.

Contract (what a deploy tool may rely on)::

    app-migrate upgrade [REV]   # REV defaults to "head"
    app-migrate downgrade REV   # e.g. "base" or "0001"
    app-migrate current
    app-migrate heads           # needs no database
    app-migrate plan            # what "upgrade head" would run; changes nothing

On success the command prints exactly one JSON object on one line on stdout and exits 0:

* ``upgrade`` / ``downgrade``:
  ``{"event": "migrate", "action": "upgrade", "from": "0001", "to": "0002", "head": "0002",
  "changed": true, "ahead": false}`` where ``from``/``to`` are the database's revision before
  and after (``null`` for an empty database) and ``changed`` is true only when the revision
  moved.
* ``current``: ``{"event": "current", "current": "0002", "head": "0002", "up_to_date": true}``
* ``heads``: ``{"event": "heads", "head": "0002", "heads": ["0002"]}``

``plan`` is the exception to the one-line rule: it reads the database's revision (a plain
``SELECT``, no migration lock, no writes) and prints the SQL that ``upgrade head`` would run
from there, as Alembic's offline (``--sql``) mode renders it for PostgreSQL: statements ending
in ``;``, ``-- Running upgrade A -> B`` comments and blank lines, ``BEGIN;``/``COMMIT;`` around
it all, and for an empty database the ``CREATE TABLE alembic_version`` too. The LAST line of
stdout is then the JSON object::

    {"event": "plan", "from": "0001", "to": "0002", "pending": ["0002"], "statements": 4,
     "ahead": false}

``from`` is the database's revision (``null`` when empty), ``to`` the head of this release,
``pending`` the revisions ``upgrade head`` would apply, oldest first, and ``statements`` the
number of SQL statements printed (transaction and ``alembic_version`` bookkeeping included).
With nothing pending, no SQL is printed and ``statements`` is 0. The SQL is what a deploy tool
scans for destructive statements before it migrates; the scan is not done here.

Every result of ``upgrade`` and ``plan`` carries ``"ahead"``. A database at a revision this
release does not ship was migrated by a newer release: what a rollback leaves (the schema only
expands, so the older code runs on it). ``upgrade head`` and ``plan`` then change nothing and
succeed with ``"ahead": true`` (``from`` = ``to`` = the database's revision, nothing pending) and
a warning on stderr; nothing is ever downgraded implicitly. An explicit ``upgrade REV`` to a
revision this release does not know still fails.

Logs (JSON lines) go to stderr. On failure stdout stays empty, stderr ends with a line
``app-migrate: error: ...`` and the exit status is 2 for a configuration problem (for example
``DATABASE_URL`` missing) or 1 for anything else (database unreachable, migration failed).
The database URL comes from ``DATABASE_URL`` as for the service (``app.core.config``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
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


def _unknown(script: ScriptDirectory, revisions: Sequence[str]) -> list[str]:
    """Those of the database's ``revisions`` this release's ``script`` does not ship."""
    unknown = []
    for revision in revisions:
        try:
            script.get_revision(revision)
        except (RevisionError, CommandError):  # ScriptDirectory wraps RevisionError
            unknown.append(revision)
    return unknown


def _warn_ahead(current: Sequence[str]) -> None:
    get_logger("app.migrate").warning(
        "database ahead of this release: left as it is",
        database=_one(current),
        head=_one(_heads()),
    )


def migrate(settings: Settings, action: str, revision: str) -> dict[str, Any]:
    """Upgrade or downgrade to ``revision``; the result is the JSON line ``main`` prints."""
    if action == "upgrade" and revision in {"head", "heads"}:
        current = _current(settings)
        if _unknown(ScriptDirectory.from_config(alembic_config()), current):
            _warn_ahead(current)
            return {
                "event": "migrate",
                "action": action,
                "from": _one(current),
                "to": _one(current),
                "head": _one(_heads()),
                "changed": False,
                "ahead": True,
            }
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
        "ahead": False,
    }


class _CountingBuffer(io.StringIO):
    """Alembic's offline output; counts the statements (one ``write`` per emitted chunk)."""

    statements = 0

    def write(self, text: str, /) -> int:
        chunk = text.strip()
        if chunk and not chunk.startswith("--"):
            self.statements += 1
        return super().write(text)


def plan(settings: Settings) -> tuple[str, dict[str, Any]]:
    """The SQL ``upgrade head`` would run now, and the summary ``main`` prints after it."""
    current = _current(settings)
    if len(current) > 1:
        raise CommandError(f"the database has several heads ({', '.join(current)}); cannot plan")
    before = current[0] if current else None
    script = ScriptDirectory.from_config(alembic_config())
    if _unknown(script, current):
        _warn_ahead(current)
        return "", {
            "event": "plan",
            "from": before,
            "to": before,
            "pending": [],
            "statements": 0,
            "ahead": True,
        }
    heads = sorted(script.get_heads())
    # newest first from iterate_revisions
    pending = [
        revision.revision
        for revision in reversed(list(script.iterate_revisions("heads", before or "base")))
    ]
    buffer = _CountingBuffer()
    if pending:
        config = alembic_config(settings)
        config.output_buffer = buffer
        command.upgrade(config, f"{before}:heads" if before else "heads", sql=True)
    result = {
        "event": "plan",
        "from": before,
        "to": _one(heads),
        "pending": pending,
        "statements": buffer.statements,
        "ahead": False,
    }
    return buffer.getvalue(), result


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
    sub.add_parser(
        "plan", help="print the SQL 'upgrade head' would run on the database (changes nothing)"
    )
    return parser


def _describe(exc: BaseException) -> str:
    """One line: libpq spreads its messages over several."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        text = f"database error: {exc.orig}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def run(argv: Sequence[str] | None = None) -> tuple[str, dict[str, Any]]:
    """Parse ``argv`` and do the work: the text ``main`` prints first, then the JSON line."""
    args = _build_parser().parse_args(argv)
    if args.command == "heads":
        heads = _heads()
        return "", {"event": "heads", "head": _one(heads), "heads": heads}
    settings = load_settings()
    if args.command == "current":
        current, head = _one(_current(settings)), _one(_heads())
        return "", {
            "event": "current",
            "current": current,
            "head": head,
            "up_to_date": current == head,
        }
    if args.command == "plan":
        return plan(settings)
    return "", migrate(settings, args.command, args.revision)


def main(argv: Sequence[str] | None = None) -> int:
    level = os.environ.get("LOG_LEVEL", "INFO").strip().upper()
    configure_logging(
        level if level in {"DEBUG", "WARNING", "ERROR", "CRITICAL"} else "INFO", stream=sys.stderr
    )
    try:
        text, result = run(argv)
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
    if text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    print(json.dumps(result, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
