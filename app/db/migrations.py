"""Where the packaged Alembic scripts live, and what the code expects the schema to be."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from app.core.config import Settings

#: The package directory; ``alembic.ini`` and ``migrations/`` are shipped inside the wheel.
PACKAGE_DIR = Path(__file__).resolve().parent.parent

#: Key of the PostgreSQL session advisory lock held while migrations run, so two deploys
#: cannot migrate at once. Any fixed bigint works; this one spells "fm_migra" in ASCII.
MIGRATION_LOCK_KEY = 0x666D5F6D69677261


def alembic_config(settings: Settings | None = None) -> Config:
    """Alembic's config for the packaged migrations, independent of the working directory.

    ``settings`` reach ``env.py`` through ``config.attributes`` (the URL never goes into the
    ini, where ``%`` in an encoded password would be read as interpolation); without them
    ``env.py`` reads ``DATABASE_URL`` through ``get_settings()``.
    """
    config = Config(str(PACKAGE_DIR / "alembic.ini"))
    if settings is not None:
        config.attributes["settings"] = settings
    return config


@lru_cache(maxsize=1)
def expected_head() -> str:
    """The head revision shipped with this code (read once from the packaged scripts)."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise RuntimeError("no Alembic revisions found in the package")
    return head
