"""The service's settings: one ``Settings`` object read from the environment.

Environment variables (names are case-insensitive, as pydantic-settings reads them):

``DATABASE_URL``
    Required, no default. ``postgresql://`` (or ``postgres://``) and ``postgresql+psycopg://``
    are accepted and normalised to SQLAlchemy's psycopg 3 driver, which serves both the async
    engine of the service and the sync engine of the migrations.
``APP_RELEASE``
    The release id the deploy passes in; reported by ``/health`` and the ``X-App-Release``
    header. Default ``dev``.
``APP_ENV``
    ``production`` (default) or ``development``. Placeholder passwords are refused outside
    development.
``LOG_LEVEL``
    ``DEBUG``, ``INFO`` (default), ``WARNING``, ``ERROR`` or ``CRITICAL``.
``HEALTH_DB_TIMEOUT``
    Seconds the health checks wait for the database (default 1.5).
``DB_CONNECT_TIMEOUT``
    Seconds a new database connection may take before it fails (default 5; libpq's minimum
    is 2).
``PROMETHEUS_MULTIPROC_DIR``
    Optional. When set, ``/metrics`` aggregates every Gunicorn worker's samples from this
    directory (prometheus_client's multiprocess mode, which reads the same variable).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import DirectoryPath, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

#: Passwords that are obviously not secrets; refused unless ``APP_ENV=development``.
PLACEHOLDER_PASSWORDS = frozenset(
    {
        "changeme",
        "change_me",
        "change-me",
        "password",
        "passw0rd",
        "secret",
        "placeholder",
        "example",
        "xxx",
        "todo",
        "replace_me",
        "replaceme",
    }
)

_ACCEPTED_SCHEMES = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
}

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class SettingsError(RuntimeError):
    """The environment does not describe a runnable service; the message names the variable."""


class Settings(BaseSettings):
    """Everything the service reads from its environment."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    # repr=False keeps the password out of tracebacks and debug prints.
    database_url: str = Field(repr=False, description="postgresql://USER:PASSWORD@HOST:PORT/DB")
    app_release: str = Field(default="dev", min_length=1, max_length=128)
    app_env: Literal["production", "development"] = "production"
    log_level: LogLevel = "INFO"
    health_db_timeout: float = Field(default=1.5, gt=0, le=60)
    db_connect_timeout: int = Field(default=5, ge=2, le=300)
    # Must exist: prometheus_client writes a file there on every worker's first request.
    prometheus_multiproc_dir: DirectoryPath | None = None

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("app_env", mode="before")
    @classmethod
    def _lower_env(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("prometheus_multiproc_dir", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url")
    @classmethod
    def _normalise_database_url(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError(
                "is not a URL; expected postgresql://USER:PASSWORD@HOST:PORT/DBNAME"
            ) from None
        driver = _ACCEPTED_SCHEMES.get(url.drivername)
        if driver is None:
            raise ValueError(
                f"uses the unsupported scheme {url.drivername!r}; "
                "expected postgresql:// or postgresql+psycopg://"
            )
        return url.set(drivername=driver).render_as_string(hide_password=False)

    @model_validator(mode="after")
    def _refuse_placeholder_password(self) -> Settings:
        password = make_url(self.database_url).password
        if (
            self.app_env != "development"
            and password is not None
            and password.strip().lower() in PLACEHOLDER_PASSWORDS
        ):
            raise ValueError(
                "DATABASE_URL contains a placeholder password; set a real secret "
                "(placeholders are accepted only with APP_ENV=development)"
            )
        return self


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        names = [str(part).upper() for part in item["loc"]]
        message = item["msg"].removeprefix("Value error, ")
        if not names:
            problems.append(message)
        elif item["type"] == "missing":
            problems.append(f"{names[0]} is required but not set in the environment")
        else:
            problems.append(f"{names[0]} {message}")
    return "invalid settings: " + "; ".join(problems)


def load_settings() -> Settings:
    """Read the environment now; raise ``SettingsError`` naming the offending variable."""
    try:
        return Settings()  # fields come from the environment
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once (``get_settings.cache_clear()`` re-reads them)."""
    return load_settings()
