"""Fixtures for the service's tests: in-process clients on a real database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from app.core.config import Settings
from app.main import create_app
from tests.helpers.testclient import TestClient

RELEASE = "2026.11.25-test"

ClientFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(app_env: pytest.MonkeyPatch) -> Iterator[ClientFactory]:
    """Start the app (lifespan included) on ``database_url``; stopped after the test.

    Keyword arguments override settings; ``raise_server_exceptions`` goes to the TestClient.
    """
    stack = ExitStack()

    def factory(
        database_url: str, *, raise_server_exceptions: bool = True, **overrides: Any
    ) -> TestClient:
        values: dict[str, Any] = {"app_release": RELEASE} | overrides
        settings = Settings(database_url=database_url, **values)
        client = TestClient(create_app(settings), raise_server_exceptions=raise_server_exceptions)
        stack.enter_context(client)
        return client

    with stack:
        yield factory


@pytest.fixture
def client(make_client: ClientFactory, migrated_database_url: str) -> TestClient:
    """The app on a fresh database migrated to head."""
    return make_client(migrated_database_url)
