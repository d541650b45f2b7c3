"""The pgbackrest module's restore request check (plugins/modules/pgbackrest.py): what it
refuses before anything stops, and which backup and recovery type it picks. The restore itself
runs on the lab (tests/lab/cluster/test_60_restore.py)."""

from __future__ import annotations

import importlib
import sys
import time
from types import ModuleType
from typing import Any

import pytest

from tests.helpers.modules import PACKAGE, collection_path

FULL = {"label": "20261204-203848F", "stop": 1_796_416_730}
DIFF = {"label": "20261204-203848F_20261204-204420D", "stop": 1_796_417_062}


class Failed(Exception):
    pass


class FakeModule:
    def __init__(self, **params: Any) -> None:
        self.params = {"stanza": "main", "set": None, "target_time": None, **params}

    def fail_json(self, msg: str, **_: Any) -> None:
        raise Failed(msg)


@pytest.fixture(scope="module")
def module() -> ModuleType:
    sys.path.insert(0, collection_path())
    return importlib.import_module(f"{PACKAGE}.modules.pgbackrest")


def plan(module: ModuleType, **params: Any) -> dict[str, Any]:
    result: dict[str, Any] = module.restore_plan(FakeModule(**params), [FULL, DIFF])
    return result


def test_the_latest_state_a_set_and_a_moment(module: ModuleType) -> None:
    assert plan(module) == {"set": DIFF["label"], "type": "default", "target": None}
    assert plan(module, set=FULL["label"]) == {
        "set": FULL["label"], "type": "immediate", "target": None,
    }  # fmt: skip
    # A moment between the two backups starts from the newest one that ended before it.
    between = time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime(FULL["stop"] + 60))
    assert plan(module, target_time=between) == {
        "set": FULL["label"], "type": "time", "target": between,
    }  # fmt: skip
    later = time.strftime("%Y-%m-%d %H:%M:%S.123456+00:00", time.gmtime(DIFF["stop"] + 5))
    assert plan(module, target_time=later)["set"] == DIFF["label"]


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"set": "20200101-000000F"}, "no backup '20200101-000000F' in stanza main"),
        ({"target_time": "2026-12-04 20:44"}, "not a moment with its time zone"),
        ({"target_time": "2026-12-04 20:44:00"}, "not a moment with its time zone"),
        ({"target_time": "2999-01-01 00:00:00+00"}, "is in the future"),
        ({"target_time": "2020-01-01 00:00:00Z"}, "before the end of the oldest backup"),
        (
            {"set": DIFF["label"], "target_time": "2026-12-04 20:40:00+00"},
            "ended after target_time",
        ),
    ],
)
def test_a_request_the_repository_cannot_serve_is_refused(
    module: ModuleType, params: dict[str, Any], reason: str
) -> None:
    with pytest.raises(Failed, match=reason):
        plan(module, **params)


def test_an_empty_repository_has_nothing_to_restore(module: ModuleType) -> None:
    with pytest.raises(Failed, match="has no backup"):
        module.restore_plan(FakeModule(), [])
