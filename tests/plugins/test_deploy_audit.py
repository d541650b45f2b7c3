"""The audit log module (plugins/modules/deploy_audit.py): one JSON line per record, appended."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.modules import run_module


def test_records_are_appended_one_json_line_each(tmp_path: Path) -> None:
    log = tmp_path / "log" / "notes-deploys.jsonl"
    first = {"id": "a", "outcome": "success", "message": "line one\nline two", "duration_s": 12.5}
    second = {"id": "b", "outcome": "failed", "hosts": {"app1": "reverted", "app2": "untouched"}}
    for record in (first, second):
        result = run_module("deploy_audit", {"path": str(log), "record": record})
        assert result["rc"] == 0 and result["changed"] is True, result
    lines = log.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [first, second]
    assert result["line"] == lines[-1]


def test_check_mode_writes_nothing(tmp_path: Path) -> None:
    log = tmp_path / "deploys.jsonl"
    result = run_module("deploy_audit", {"path": str(log), "record": {"id": "a"}}, check=True)
    assert result["changed"] is True and result["line"] == '{"id": "a"}'
    assert not log.exists()
