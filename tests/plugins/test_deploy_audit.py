"""The audit log module (plugins/modules/deploy_audit.py): one JSON line per record, appended."""

from __future__ import annotations

import json
import time
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


def test_the_deploy_marker_holds_the_last_record(tmp_path: Path) -> None:
    """The marker Prometheus shows a deploy by: one sample, the last record's action,
    outcome and release, its value when the record was written."""
    prom = tmp_path / "textfile" / "fastapi_metal_notes_deploy.prom"
    args = {"metrics_path": str(prom), "metrics_labels": {"app": "notes"}}
    before = time.time()
    for record in (
        {"id": "a", "action": "deploy", "outcome": "success", "to_release": "1.0-a"},
        {"id": "b", "action": "rollback", "outcome": "success", "to_release": '0.9-"b"'},
    ):
        result = run_module(
            "deploy_audit", {"path": str(tmp_path / "log.jsonl"), "record": record, **args}
        )
        assert result["rc"] == 0, result
    samples = [line for line in prom.read_text().splitlines() if not line.startswith("#")]
    assert len(samples) == 1, samples
    labels, value = samples[0].rsplit(" ", 1)
    assert labels == (
        'fastapi_metal_deploy_finished_timestamp_seconds{action="rollback",app="notes",'
        'outcome="success",release="0.9-\\"b\\""}'
    )
    assert before - 1 <= float(value) <= time.time() + 1
