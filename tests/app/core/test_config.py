"""Settings from the environment: required URL, normalisation, placeholder refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.config import Settings, SettingsError, get_settings, load_settings

GOOD_URL = "postgresql://app:s3cr3t-Value@db.internal:5432/app"


def test_database_url_is_required_and_the_error_names_it(app_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "DATABASE_URL is required" in str(caught.value)


def test_an_empty_database_url_is_refused(app_env: pytest.MonkeyPatch) -> None:
    app_env.setenv("DATABASE_URL", "  ")
    with pytest.raises(SettingsError, match="DATABASE_URL must not be empty"):
        load_settings()


def test_defaults(app_env: pytest.MonkeyPatch) -> None:
    app_env.setenv("DATABASE_URL", GOOD_URL)
    settings = load_settings()
    assert settings.app_release == "dev"
    assert settings.app_env == "production"
    assert settings.log_level == "INFO"
    assert settings.health_db_timeout == 1.5
    assert settings.db_connect_timeout == 5
    assert settings.prometheus_multiproc_dir is None


def test_every_variable_is_read_from_the_environment(
    app_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    app_env.setenv("DATABASE_URL", GOOD_URL)
    app_env.setenv("APP_RELEASE", "0.1.0-abc1234")
    app_env.setenv("APP_ENV", "Development")
    app_env.setenv("LOG_LEVEL", "debug")
    app_env.setenv("HEALTH_DB_TIMEOUT", "0.75")
    app_env.setenv("DB_CONNECT_TIMEOUT", "3")
    app_env.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.app_release == "0.1.0-abc1234"
    assert settings.app_env == "development"
    assert settings.log_level == "DEBUG"
    assert settings.health_db_timeout == 0.75
    assert settings.db_connect_timeout == 3
    assert settings.prometheus_multiproc_dir == tmp_path


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (
            "postgresql://app:pw%40x@db:5432/app",
            "postgresql+psycopg://app:pw%40x@db:5432/app",
        ),
        ("postgres://app:pw@db/app", "postgresql+psycopg://app:pw@db/app"),
        (
            "postgresql+psycopg://app:pw@db/app?sslmode=require",
            "postgresql+psycopg://app:pw@db/app?sslmode=require",
        ),
        (
            "postgresql:///app?host=/run/postgresql",
            "postgresql+psycopg:///app?host=%2Frun%2Fpostgresql",
        ),
    ],
)
def test_database_url_is_normalised_to_psycopg(
    app_env: pytest.MonkeyPatch, given: str, expected: str
) -> None:
    app_env.setenv("DATABASE_URL", given)
    assert load_settings().database_url == expected


@pytest.mark.parametrize(
    "url", ["mysql://app:pw@db/app", "postgresql+asyncpg://app:pw@db/app", "not a url"]
)
def test_other_databases_and_drivers_are_refused(app_env: pytest.MonkeyPatch, url: str) -> None:
    app_env.setenv("DATABASE_URL", url)
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        load_settings()


@pytest.mark.parametrize("password", ["changeme", "CHANGE_ME", "password", "Password", "secret"])
def test_a_placeholder_password_is_refused_in_production(
    app_env: pytest.MonkeyPatch, password: str
) -> None:
    app_env.setenv("DATABASE_URL", f"postgresql://app:{password}@db/app")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "DATABASE_URL" in message
    assert "placeholder password" in message
    assert "APP_ENV=development" in message


def test_a_placeholder_password_is_allowed_in_development(app_env: pytest.MonkeyPatch) -> None:
    app_env.setenv("DATABASE_URL", "postgresql://app:changeme@localhost/app")
    app_env.setenv("APP_ENV", "development")
    assert load_settings().database_url == "postgresql+psycopg://app:changeme@localhost/app"


def test_a_password_that_merely_contains_a_placeholder_is_fine(
    app_env: pytest.MonkeyPatch,
) -> None:
    app_env.setenv("DATABASE_URL", "postgresql://app:password-9f8e7d@db/app")
    assert load_settings().app_env == "production"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("APP_ENV", "staging"),
        ("LOG_LEVEL", "LOUD"),
        ("HEALTH_DB_TIMEOUT", "0"),
        ("HEALTH_DB_TIMEOUT", "soon"),
        ("DB_CONNECT_TIMEOUT", "1"),
    ],
)
def test_invalid_values_are_refused_naming_the_variable(
    app_env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    app_env.setenv("DATABASE_URL", GOOD_URL)
    app_env.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert name in str(caught.value)


def test_the_password_stays_out_of_the_repr(app_env: pytest.MonkeyPatch) -> None:
    app_env.setenv("DATABASE_URL", GOOD_URL)
    assert "s3cr3t" not in repr(load_settings())
    assert "s3cr3t" not in str(Settings(database_url=GOOD_URL))


def test_get_settings_is_cached_until_cleared(app_env: pytest.MonkeyPatch) -> None:
    app_env.setenv("DATABASE_URL", GOOD_URL)
    app_env.setenv("APP_RELEASE", "one")
    first = get_settings()
    app_env.setenv("APP_RELEASE", "two")
    assert get_settings() is first
    get_settings.cache_clear()
    assert get_settings().app_release == "two"


def test_a_missing_metrics_directory_is_refused(
    app_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    app_env.setenv("DATABASE_URL", GOOD_URL)
    app_env.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "absent"))
    with pytest.raises(SettingsError, match="PROMETHEUS_MULTIPROC_DIR"):
        load_settings()
