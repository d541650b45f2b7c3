"""Release variants of the service, for the lab tests of rolling upgrades.

``make_release(dest, kind, version)`` copies the project's packaging files (``pyproject.toml``,
the readme ``pyproject.toml`` names, ``app/`` without ``__pycache__``) from the repository
root into ``dest``, sets ``[project] version`` (and ``app.__version__``) to ``version`` so
every release is a different wheel, applies the variant(s) and returns ``dest``: a project
directory the deploy role builds a wheel from.

``kind`` is one variant or a sequence of them, applied in order on the same copy, so variants
stack::

    make_release(tmp / "a", "base", "0.2.0")                               # A: unchanged
    make_release(tmp / "b", "additive", "0.3.0")                           # B: + revision 0003
    make_release(tmp / "c", ["additive", "broken-health"], "0.4.0")        # C: B's schema
    make_release(tmp / "d", ["additive", "failing-migration"], "0.5.0")    # D: + 0004 fails
    make_release(tmp / "e", ["additive", "destructive"], "0.6.0")          # E: + 0004 drops

The generated revisions depend only on the source tree, so "additive" is the same revision
(same id, same file) in B, C, D and E: a database B migrated is at C's, D's and E's previous
head. The variants:

``base``
    The code as it is.
``additive``
    A new revision after the current head (found by reading the copied revisions, never
    assumed): ``op.add_column`` of ``notes.color``, nullable with a server default, which the
    release still serving neither reads nor writes (backward compatible).
``broken-health``
    The release starts and serves the API, but ``/health`` and ``/health/ready`` always answer
    503: a middleware module ``app/lab_broken_health.py`` is added and ``create_app`` in
    ``app/main.py`` installs it just inside ``RequestContextMiddleware`` (so the 503s still carry
    ``X-App-Release`` and an access log line). The build fails if that line is not found.
``failing-migration``
    A new revision whose upgrade first adds a column ``notes.lab_failing_marker`` and then runs
    ``SELECT * FROM table_that_does_not_exist``: ``app-migrate upgrade`` exits 1 and, as
    ``env.py`` runs every pending revision in one PostgreSQL transaction, the schema stays at
    the previous head (the marker column does not exist afterwards).
``destructive``
    A new revision that drops a column: ``notes.color`` when "additive" came before it in the
    same build, else ``notes.pinned`` (which the code uses: never let that one run). Its SQL
    contains ``DROP COLUMN``; a deploy tool's plan scan must refuse it.
``data-loss``
    A new revision that succeeds and deletes every note (a botched data cleanup: its SQL is a
    ``DELETE``, which no schema scan calls destructive). Only a restore brings the rows back.
``renaming``
    A new revision that renames a column (the same choice of column as "destructive") with
    ``op.alter_column(new_column_name=...)``; its SQL contains ``RENAME``.

Each build also writes ``dest/lab-release.json`` (not part of the wheel): the version, the
variants, the head before and after, the revisions added and the column a variant dropped
or renamed. ``read_release_info(dest)`` reads it.

Command line (for a playbook or a shell)::

    python -m tests.lab.releases DEST KIND[,KIND...] VERSION
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import textwrap
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

REPO_ROOT = Path(__file__).resolve().parents[2]
KINDS = (
    "base", "additive", "broken-health", "failing-migration", "destructive", "renaming",
    "data-loss",
)  # fmt: skip
INFO_FILE = "lab-release.json"

#: The column "additive" adds; "destructive"/"renaming" act on it when it is there.
ADDED_COLUMN = "color"
#: A column of the real schema, used by "destructive"/"renaming" without "additive" before.
EXISTING_COLUMN = "pinned"
#: How a downgrade puts a dropped column back (server defaults make NOT NULL safe).
_COLUMN_DEFINITIONS = {
    ADDED_COLUMN: (
        'sa.Column("color", sa.String(length=20), server_default=sa.text("\'yellow\'"), '
        "nullable=True)"
    ),
    EXISTING_COLUMN: (
        'sa.Column("pinned", sa.Boolean(), server_default=sa.text("false"), nullable=False)'
    ),
}

#: The line of ``app/main.py`` the "broken-health" variant patches (must occur exactly once).
MIDDLEWARE_LINE = "    application.add_middleware(RequestContextMiddleware)\n"

BROKEN_HEALTH_MODULE = '''\
"""Lab release variant "broken-health": ``/health`` and ``/health/ready`` always answer 503.

Written by tests/lab/releases.py into a copy of the service, never into the real one. The
release starts and serves the API; only its health checks fail, so a deploy's health gate must
stop the rollout and put this host back on the previous release.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

BODY = b'{"status":"broken","detail":"lab release variant broken-health"}'


class BrokenHealthMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path == "/health" or path.startswith("/health/"):
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"cache-control", b"no-store"),
                        (b"content-length", str(len(BODY)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": BODY})
            return
        await self.app(scope, receive, send)
'''

_REVISION_TEMPLATE = '''\
"""{title}

Lab release variant "{kind}", generated by tests/lab/releases.py: never part of the real
service.

Revision ID: {revision}
Revises: {down_revision}
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = {revision!r}
down_revision: str | None = {down_revision!r}
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
{upgrade}


def downgrade() -> None:
{downgrade}
'''


class ReleaseBuildError(RuntimeError):
    """The source tree does not look the way a variant needs it to: fix the builder."""


@dataclass
class ReleaseInfo:
    """What a build did (also written to ``dest/lab-release.json``)."""

    version: str
    kinds: list[str]
    head_before: str
    head: str
    revisions_added: list[str] = field(default_factory=list)
    #: Variant -> the column it dropped or renamed.
    columns: dict[str, str] = field(default_factory=dict)


@dataclass
class _Build:
    dest: Path
    info: ReleaseInfo
    applied: list[str] = field(default_factory=list)

    @property
    def app_dir(self) -> Path:
        return self.dest / "app"

    @property
    def versions_dir(self) -> Path:
        return self.app_dir / "migrations" / "versions"


def read_release_info(dest: Path) -> ReleaseInfo:
    data: dict[str, Any] = json.loads((dest / INFO_FILE).read_text())
    return ReleaseInfo(**data)


def make_release(
    dest: Path, kind: str | Sequence[str], version: str, *, source: Path = REPO_ROOT
) -> Path:
    """Copy the project from ``source`` to ``dest``, set its version, apply ``kind``; ``dest``.

    ``dest`` must not exist or be an empty directory. ``kind`` is one of ``KINDS`` or a
    sequence of them (applied in order; each at most once).
    """
    kinds = [kind] if isinstance(kind, str) else list(kind)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown release kind(s) {unknown or kinds!r}; choose from {KINDS}")
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"a release kind may appear once: {kinds!r}")
    try:
        Version(version)
    except InvalidVersion:
        raise ValueError(f"{version!r} is not a PEP 440 version (e.g. 0.2.0)") from None
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not empty")

    _copy_project(source, dest)
    _set_version(dest, version)
    head = current_head(dest / "app" / "migrations" / "versions")
    build = _Build(dest, ReleaseInfo(version=version, kinds=kinds, head_before=head, head=head))
    for name in kinds:
        _VARIANTS[name](build)
        build.applied.append(name)
    # The builder's own check: the revisions still form one line ending at the new head.
    found = current_head(build.versions_dir)
    if found != build.info.head:
        raise ReleaseBuildError(f"expected head {build.info.head}, the copy has {found}")
    (dest / INFO_FILE).write_text(json.dumps(asdict(build.info), indent=2) + "\n")
    return dest


# -- copying and versioning ----------------------------------------------------------------


def _readme_of(pyproject: dict[str, Any]) -> str | None:
    readme = pyproject.get("project", {}).get("readme")
    if isinstance(readme, str):
        return readme
    if isinstance(readme, dict) and isinstance(readme.get("file"), str):
        return str(readme["file"])
    return None


def _copy_project(source: Path, dest: Path) -> None:
    pyproject_path = source / "pyproject.toml"
    pyproject = tomllib.loads(pyproject_path.read_text())
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(pyproject_path, dest / "pyproject.toml")
    readme = _readme_of(pyproject)
    if readme is not None:
        (dest / readme).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / readme, dest / readme)
    shutil.copytree(
        source / "app",
        dest / "app",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"),
    )


def _replace_once(path: Path, pattern: str, replacement: str, what: str) -> None:
    text = path.read_text()
    new, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    if count != 1:
        raise ReleaseBuildError(f"{what}: expected one match of {pattern!r} in {path}, got {count}")
    path.write_text(new)


def _set_version(dest: Path, version: str) -> None:
    pyproject = dest / "pyproject.toml"
    text = pyproject.read_text()
    if "version" in tomllib.loads(text).get("project", {}).get("dynamic", []):
        raise ReleaseBuildError("pyproject.toml has a dynamic version; set it another way")
    # Only inside the [project] table: from its header to the next table header.
    match = re.search(r"(?ms)^\[project\]\s*$(.*?)(?=^\[|\Z)", text)
    if match is None:
        raise ReleaseBuildError(f"no [project] table in {pyproject}")
    body, count = re.subn(
        r'(?m)^version\s*=\s*"[^"]*"', f'version = "{version}"', match.group(1), count=0
    )
    if count != 1:
        raise ReleaseBuildError(f"expected one version = ... in [project] of {pyproject}")
    text = text[: match.start(1)] + body + text[match.end(1) :]
    pyproject.write_text(text)
    if tomllib.loads(text)["project"]["version"] != version:
        raise ReleaseBuildError(f"could not set the version in {pyproject}")
    _replace_once(
        dest / "app" / "__init__.py",
        r'^__version__ = "[^"]*"$',
        f'__version__ = "{version}"',
        "app.__version__",
    )


# -- revisions -----------------------------------------------------------------------------


def current_head(versions_dir: Path) -> str:
    """The single head of the revisions in ``versions_dir`` (read with Alembic itself)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(versions_dir.parent), version_locations=[str(versions_dir)])
    heads = script.get_heads()
    if len(heads) != 1:
        raise ReleaseBuildError(f"expected one head in {versions_dir}, found {sorted(heads)}")
    return heads[0]


def next_revision_id(head: str, slug: str) -> str:
    """``0002`` -> ``0003`` (same width); a non-numeric head gets ``lab_<slug>``."""
    if head.isdigit():
        return str(int(head) + 1).zfill(len(head))
    return f"lab_{slug}"[:32]


def _add_revision(
    build: _Build, kind: str, slug: str, title: str, upgrade: str, downgrade: str
) -> str:
    down_revision = build.info.head
    revision = next_revision_id(down_revision, slug)
    source = _REVISION_TEMPLATE.format(
        title=title,
        kind=kind,
        revision=revision,
        down_revision=down_revision,
        upgrade=textwrap.indent(textwrap.dedent(upgrade).strip(), "    "),
        downgrade=textwrap.indent(textwrap.dedent(downgrade).strip(), "    "),
    )
    compile(source, f"{revision}_{slug}.py", "exec")  # a template bug fails here, loudly
    path = build.versions_dir / f"{revision}_{slug}.py"
    if path.exists():
        raise ReleaseBuildError(f"{path} exists already")
    path.write_text(source)
    build.info.head = revision
    build.info.revisions_added.append(revision)
    return revision


def _target_column(build: _Build) -> str:
    return ADDED_COLUMN if "additive" in build.applied else EXISTING_COLUMN


def _base(build: _Build) -> None:
    return None


def _additive(build: _Build) -> None:
    _add_revision(
        build,
        "additive",
        "lab_add_notes_color",
        "Add notes.color: nullable, with a server default (backward compatible).",
        f'op.add_column("notes", {_COLUMN_DEFINITIONS[ADDED_COLUMN]})',
        f'op.drop_column("notes", "{ADDED_COLUMN}")',
    )


def _failing_migration(build: _Build) -> None:
    _add_revision(
        build,
        "failing-migration",
        "lab_failing_migration",
        "A migration that fails halfway: its first step must be rolled back with it.",
        """
        op.add_column("notes", sa.Column("lab_failing_marker", sa.Integer(), nullable=True))
        op.execute("SELECT * FROM table_that_does_not_exist")
        """,
        'op.drop_column("notes", "lab_failing_marker")',
    )


def _destructive(build: _Build) -> None:
    column = _target_column(build)
    restore = f'op.add_column("notes", {_COLUMN_DEFINITIONS[column]})'
    if column == EXISTING_COLUMN:
        restore += (
            '\nop.create_index("ix_notes_pinned_id", "notes", [sa.text("pinned DESC"), "id"])'
        )
    _add_revision(
        build,
        "destructive",
        f"lab_drop_notes_{column}",
        f"Drop notes.{column}: destructive, the release still serving may need it.",
        f'op.drop_column("notes", "{column}")',
        restore,
    )
    build.info.columns["destructive"] = column


def _renaming(build: _Build) -> None:
    column = _target_column(build)
    renamed = f"{column}_renamed"
    _add_revision(
        build,
        "renaming",
        f"lab_rename_notes_{column}",
        f"Rename notes.{column}: breaks the release still serving if it uses the column.",
        f'op.alter_column("notes", "{column}", new_column_name="{renamed}")',
        f'op.alter_column("notes", "{renamed}", new_column_name="{column}")',
    )
    build.info.columns["renaming"] = column


def _data_loss(build: _Build) -> None:
    _add_revision(
        build,
        "data-loss",
        "lab_cleanup_notes",
        "A data cleanup gone wrong: it deletes every note (its schema is untouched).",
        'op.execute("DELETE FROM notes")',
        "pass  # the rows are gone: only a restore brings them back",
    )


def _broken_health(build: _Build) -> None:
    main = build.app_dir / "main.py"
    text = main.read_text()
    if text.count(MIDDLEWARE_LINE) != 1:
        raise ReleaseBuildError(
            f"broken-health: the line {MIDDLEWARE_LINE.strip()!r} is not in {main} exactly once; "
            "update MIDDLEWARE_LINE in tests/lab/releases.py"
        )
    # Added before (so inside) the request-context middleware: the 503s keep its headers.
    patched = text.replace(
        MIDDLEWARE_LINE,
        "    from app.lab_broken_health import BrokenHealthMiddleware  # lab variant\n"
        "\n"
        "    application.add_middleware(BrokenHealthMiddleware)\n" + MIDDLEWARE_LINE,
    )
    compile(patched, str(main), "exec")
    main.write_text(patched)
    (build.app_dir / "lab_broken_health.py").write_text(BROKEN_HEALTH_MODULE)


_VARIANTS: dict[str, Callable[[_Build], None]] = {
    "base": _base,
    "additive": _additive,
    "broken-health": _broken_health,
    "failing-migration": _failing_migration,
    "destructive": _destructive,
    "renaming": _renaming,
    "data-loss": _data_loss,
}


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m tests.lab.releases", description="Build a lab release variant."
    )
    parser.add_argument("dest", type=Path)
    parser.add_argument("kinds", help=f"comma-separated, in order, from {', '.join(KINDS)}")
    parser.add_argument("version")
    args = parser.parse_args(argv)
    dest = make_release(args.dest, args.kinds.split(","), args.version)
    print((dest / INFO_FILE).read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
