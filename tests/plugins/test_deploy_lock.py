"""The deploy lock module (plugins/modules/deploy_lock.py), run as Ansible runs it on the lock
host. The lock on real hosts (a second deploy refused, a converge refused) runs in the
cluster scenario."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.helpers.modules import run_module

ME = {"id": "run-1", "action": "deploy", "who": "ops@laptop", "started": "2026-12-01T10:00:00Z",
      "release": "1.0-abc"}  # fmt: skip
OTHER = {"id": "run-2", "action": "rollback", "who": "dev@desk", "started": "2026-12-01T09:58:00Z",
         "release": "0.9-old"}  # fmt: skip


def lock(
    path: Path,
    state: str,
    holder: dict[str, Any] | None = None,
    *,
    check: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    args: dict[str, Any] = {"path": str(path), "state": state, **extra}
    if holder is not None:
        args["holder"] = holder
    return run_module("deploy_lock", args, check=check)


def test_take_then_take_again_then_release(tmp_path: Path) -> None:
    path = tmp_path / "app" / "deploy.lock"
    taken = lock(path, "present", ME)
    assert taken["rc"] == 0 and taken["changed"] is True, taken
    assert json.loads(path.read_text()) == ME
    again = lock(path, "present", ME)
    assert again["rc"] == 0 and again["changed"] is False, "this holder holds it already"
    released = lock(path, "absent", ME)
    assert released["changed"] is True and not path.exists()
    assert lock(path, "absent", ME)["changed"] is False, "nothing left to release"


def test_a_second_deploy_is_refused_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "deploy.lock"
    assert lock(path, "present", OTHER)["changed"] is True
    refused = lock(path, "present", ME, force_hint="-e fastapi_app_break_lock=true")
    assert refused["rc"] == 1 and refused["failed"] is True
    assert "Another deploy holds the lock" in refused["msg"]
    assert "rollback by dev@desk since 2026-12-01T09:58:00Z (release 0.9-old)" in refused["msg"]
    assert refused["msg"].endswith("break the lock with -e fastapi_app_break_lock=true.")
    assert refused["holder"] == OTHER
    assert json.loads(path.read_text()) == OTHER, "the other holder's lock is untouched"
    checked = lock(path, "free")
    assert checked["rc"] == 1 and "rollback by dev@desk" in checked["msg"], "a converge stops too"
    kept = lock(path, "absent", ME)
    assert kept["changed"] is False and path.exists(), "only the holder releases its lock"


def test_force_takes_over_a_lock_left_by_a_deploy_that_died(tmp_path: Path) -> None:
    path = tmp_path / "deploy.lock"
    lock(path, "present", OTHER)
    taken = lock(path, "present", ME, force=True)
    assert taken["rc"] == 0 and taken["changed"] is True and taken["broken"] == OTHER, taken
    assert json.loads(path.read_text()) == ME


def test_free_passes_when_nobody_holds_it_and_takes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "deploy.lock"
    free = lock(path, "free")
    assert free["rc"] == 0 and free["changed"] is False and not path.exists()


def test_check_mode_refuses_like_a_run_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "deploy.lock"
    would = lock(path, "present", ME, check=True)
    assert would["changed"] is True and not path.exists(), would
    lock(path, "present", OTHER)
    refused = lock(path, "present", ME, check=True)
    assert refused["rc"] == 1 and "rollback by dev@desk" in refused["msg"]


def test_an_unreadable_lock_still_blocks_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "deploy.lock"
    path.write_text("not json")
    refused = lock(path, "present", ME)
    assert refused["rc"] == 1 and "unreadable lock ('not json')" in refused["msg"], refused


def test_the_lock_metric_is_written_while_held_and_emptied_on_release(tmp_path: Path) -> None:
    """What the DeployLockHeldTooLong alert reads: a sample with the holder's start while
    the lock is held, no sample once released (and none written for a refused deploy)."""
    path, prom = tmp_path / "deploy.lock", tmp_path / "textfile" / "fastapi_metal_notes_lock.prom"
    metrics = {"metrics_path": str(prom), "metrics_labels": {"app": "notes"}}
    assert lock(path, "present", {**ME, "started_epoch": "1764583200.5"}, **metrics)["changed"]
    samples = [line for line in prom.read_text().splitlines() if not line.startswith("#")]
    assert samples == [
        'fastapi_metal_deploy_lock_since_timestamp_seconds{action="deploy",app="notes"} 1764583200'
    ]
    assert lock(path, "present", OTHER, **metrics)["rc"] == 1
    assert len([x for x in prom.read_text().splitlines() if not x.startswith("#")]) == 1
    assert lock(path, "absent", ME, **metrics)["changed"] is True
    text = prom.read_text()
    assert "# TYPE fastapi_metal_deploy_lock_since_timestamp_seconds gauge" in text
    assert [line for line in text.splitlines() if not line.startswith("#")] == []
