"""Backups and restore on the converged lab, driven like an operator: rows written through the
edge's API, a backup as the daily timer takes it, the table dropped, and restore.yml to a
moment brings back exactly the rows written before it; a rolling upgrade whose migration
deletes every note is undone by rollback.yml and restore.yml of the backup the deploy took
right before it migrated. Durations go to .lab/results/restore-drill.json."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from tests.lab.ansible_run import ROOT, lab_exec, run_playbook
from tests.lab.cluster.conftest import edge, edge_json
from tests.lab.cluster.test_20_rolling import audit_lines, build, current_release, db_revision
from tests.lab.releases import make_release
from tests.lab.topology import APP_HOSTS, LAB_VARS

RESULTS = ROOT / ".lab" / "results" / "restore-drill.json"
RECORD = "/var/log/pgbackrest/fastapi-metal-restores.jsonl"
CONFIRM = {"pgbackrest_restore_confirm": "db1"}
MEASURED: dict[str, Any] = {}


def record(**values: Any) -> None:
    MEASURED.update(values)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(MEASURED, indent=1) + "\n")
    print(values)


def post_note(title: str, roots: Path) -> None:
    """One note through the edge, as a client writes it (201 or the test fails)."""
    out = edge(
        "/notes", roots, "-o", "/dev/null", "-w", "%{http_code}",
        "-H", "content-type: application/json", "-d", json.dumps({"title": title}),
    )  # fmt: skip
    assert out.stdout == "201", (title, out.stdout, out.stderr)


def write(tag: str, phase: str, rows: int, roots: Path) -> None:
    for i in range(rows):
        post_note(f"{tag}-{phase}-{i}", roots)


def titles(roots: Path) -> list[str]:
    """Every note's title, read through the edge page by page."""
    found: list[str] = []
    while True:
        page = edge(f"/notes?limit=100&offset={len(found)}", roots)
        assert page.returncode == 0, page.stderr
        notes = json.loads(page.stdout)
        assert isinstance(notes, list), notes
        found += [str(note["title"]) for note in notes]
        if len(notes) < 100:
            return found


def phases(tag: str, roots: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for title in titles(roots):
        if title.startswith(f"{tag}-"):
            phase = title.split("-")[1]
            counts[phase] = counts.get(phase, 0) + 1
    return counts


def db1_sql(query: str) -> str:
    return lab_exec(
        "db1", f"runuser -u postgres -- psql -XAtq -d notes -c {json.dumps(query)}"
    ).stdout.strip()


def archive_lag() -> float:
    """Seconds from the end of a WAL segment (a switch, after writes) to pgBackRest holding it:
    PostgreSQL's archiver reports it archived only once archive-push returned."""
    segment = db1_sql("SELECT pg_walfile_name(pg_switch_wal())")
    started = time.monotonic()
    while db1_sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < segment:
        assert time.monotonic() - started < 60, f"{segment} was not archived within 60 s"
        time.sleep(0.05)
    return round(time.monotonic() - started, 2)


def last_restore() -> dict[str, Any]:
    line = lab_exec("db1", f"tail -n 1 {RECORD}").stdout
    restored: dict[str, Any] = json.loads(line)
    return restored


def backup_labels() -> list[str]:
    """The labels of every backup the repository holds (pgbackrest info), oldest first."""
    out = lab_exec("db1", "runuser -u postgres -- pgbackrest --output=json --stanza=main info")
    return [str(b["label"]) for b in json.loads(out.stdout)[0]["backup"]]


def running_since() -> dict[str, str]:
    """When PostgreSQL's postmaster and every app's main process on every app host started:
    any stop and start, of any of them, changes it."""
    since = {"postgresql": db1_sql("SELECT pg_postmaster_start_time()")}
    for host in APP_HOSTS:
        for app in (a["fastapi_app_name"] for a in LAB_VARS["fastapi_metal_apps"]):
            out = lab_exec(
                host, f"systemctl show -p ExecMainStartTimestampMonotonic,ActiveState {app}"
            )
            since[f"{host}/{app}"] = out.stdout.strip()
    return since


def healthy(roots: Path) -> None:
    assert edge_json("/health", roots)["status"] == "healthy"
    for host in APP_HOSTS:
        lock = lab_exec(host, "ls /var/lib/fastapi-metal/*/deploy.lock", check=False)
        assert lock.returncode != 0, f"{host} still holds a lock: {lock.stdout}"


def test_a_restore_is_refused_without_the_confirmation_and_stops_nothing() -> None:
    before = running_since()
    apps = {k: v for k, v in before.items() if k != "postgresql"}
    assert before["postgresql"] and all("ActiveState=active" in v for v in apps.values()), before
    run = run_playbook("restore.yml")
    assert run.rc != 0
    assert (
        "pgbackrest_restore_confirm" in run.output
        and "e.g. -e pgbackrest_restore_confirm=db1" in run.output
    )
    # A backup the repository does not hold: refused before any app stops.
    wrong = run_playbook(
        "restore.yml", extra={**CONFIRM, "pgbackrest_restore_set": "20200101-000000F"}
    )
    assert wrong.rc != 0 and "no backup '20200101-000000F'" in wrong.output, wrong.output[-3000:]
    future = run_playbook(
        "restore.yml", extra={**CONFIRM, "pgbackrest_restore_time": "2999-01-01 00:00:00+00"}
    )
    assert future.rc != 0 and "is in the future" in future.output, future.output[-3000:]
    after = running_since()
    restarted = {k: (before[k], after[k]) for k in before if after[k] != before[k]}
    assert not restarted, f"restarted although the restore was refused: {restarted}"


def test_b_a_restore_to_a_moment_brings_back_exactly_the_rows_written_before_it(
    pebble_roots: Path,
) -> None:
    tag, n, m, k = f"pitr{secrets.token_hex(3)}", 20, 10, 5
    write(tag, "n", n, pebble_roots)
    lag = archive_lag()
    started = time.monotonic()
    lab_exec("db1", "systemctl start pgbackrest-backup@diff.service")  # what the daily timer runs
    backup_s = round(time.monotonic() - started, 2)
    write(tag, "m", m, pebble_roots)
    time.sleep(1.1)
    target = db1_sql("SELECT clock_timestamp()")
    time.sleep(1.1)
    write(tag, "k", k, pebble_roots)
    assert phases(tag, pebble_roots) == {"n": n, "m": m, "k": k}
    db1_sql("DROP TABLE notes")
    gone = edge("/notes", pebble_roots, "-o", "/dev/null", "-w", "%{http_code}")
    assert gone.stdout.startswith("5"), gone.stdout  # the drop is real: the API fails

    run = run_playbook("restore.yml", extra={**CONFIRM, "pgbackrest_restore_time": target})
    assert run.rc == 0, run.output[-4000:]
    assert phases(tag, pebble_roots) == {"n": n, "m": m}
    healthy(pebble_roots)
    restored = last_restore()
    assert (restored["type"], restored["target"]) == ("time", target), restored
    assert restored["timeline"] > restored["timeline_before"], restored
    for host in APP_HOSTS:
        hold = audit_lines(host)[-1]
        assert (hold["action"], hold["outcome"]) == ("hold", "success"), hold
        assert restored["set"] in hold["message"], hold
    record(
        wal_archive_lag_s=lag,
        pitr_backup_diff_s=backup_s,
        pitr_restore_playbook_s=round(run.seconds, 1),
        pitr_restore_phases_s=restored["seconds"],
        pitr_target=target,
    )


@pytest.fixture(scope="module")
def data_loss(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A release whose migration deletes every note (tests/lab/releases.py: data-loss)."""
    base = tmp_path_factory.mktemp("data-loss")
    return build(make_release(base / "g", ["additive", "data-loss"], "0.9.0"))


@pytest.mark.drill
def test_c_a_migration_gone_wrong_is_undone_by_rollback_and_the_pre_migration_backup(
    pebble_roots: Path, data_loss: dict[str, object]
) -> None:
    tag = f"undo{secrets.token_hex(3)}"
    write(tag, "n", 15, pebble_roots)
    before = sorted(titles(pebble_roots))
    release_before, head_before = current_release("app1"), db_revision()

    deploy = run_playbook("rolling_upgrade.yml", extra=data_loss)
    assert deploy.rc == 0, deploy.output[-4000:]
    assert titles(pebble_roots) == [], "the migration was meant to delete every note"
    line = audit_lines("app1")[-1]
    assert line["action"] == "deploy" and line["to_release"] == data_loss["fastapi_app_release"]
    backup = line["backup"]
    assert backup["host"] == "db1" and backup["type"] == "incr" and backup["label"], line
    annotated = json.loads(
        lab_exec("db1", "runuser -u postgres -- pgbackrest --output=json --stanza=main info").stdout
    )[0]["backup"][-1]
    assert annotated["label"] == backup["label"], annotated
    assert annotated["annotation"]["fastapi-metal"] == "before-migrate", annotated

    rollback = run_playbook("rollback.yml", extra={"fastapi_metal_app": "notes"})
    assert rollback.rc == 0, rollback.output[-4000:]
    assert current_release("app1") == release_before
    run = run_playbook("restore.yml", extra={**CONFIRM, "pgbackrest_restore_set": backup["label"]})
    assert run.rc == 0, run.output[-4000:]

    assert sorted(titles(pebble_roots)) == before  # no row written before the migration is lost
    assert db_revision() == head_before
    healthy(pebble_roots)
    restored = last_restore()
    assert (restored["set"], restored["type"]) == (backup["label"], "immediate"), restored
    record(
        before_migrate_backup_s=backup["seconds"],
        undo_restore_playbook_s=round(run.seconds, 1),
        undo_restore_phases_s=restored["seconds"],
        notes_restored=len(before),
    )


def test_d_the_backup_before_migrating_can_be_skipped_and_the_audit_says_so() -> None:
    """Skipped: the repository holds the same backups after the deploy, and the audit says
    why. The control: the same deploy (the serving release again) without the skip adds one
    backup, the one its audit line names: so a deploy of the serving release is due one, and
    the count above can tell a skipped backup from one that was taken."""
    serving = current_release("app1")
    deploy: dict[str, object] = {"fastapi_metal_app": "notes", "fastapi_app_release": serving}
    before = backup_labels()
    run = run_playbook("rolling_upgrade.yml", extra={**deploy, "pgbackrest_before_migrate": False})
    assert run.rc == 0, run.output[-4000:]
    line = audit_lines("app1")[-1]
    assert line["backup"] == {
        "host": "db1",
        "label": None,
        "skipped": "pgbackrest_before_migrate=false",
    }
    skipped = backup_labels()
    assert skipped == before, f"a backup was taken although skipped: {before} -> {skipped}"

    control = run_playbook("rolling_upgrade.yml", extra=deploy)
    assert control.rc == 0, control.output[-4000:]
    taken = audit_lines("app1")[-1]["backup"]
    after = backup_labels()
    assert taken["label"] and set(after) - set(skipped) == {taken["label"]}, (skipped, after, taken)


@pytest.mark.drill
def test_e_an_app_failing_its_gate_after_a_restore_is_released_and_named(
    pebble_roots: Path,
) -> None:
    """The gate's failure path: every app still started, every lock released, the run fails
    naming each app, and the audit says so. (A gate path no app answers stands in for an app
    that does not come back.)"""
    run = run_playbook(
        "restore.yml",
        extra={**CONFIRM, "fastapi_app_rollback_health_path": "/no-such-health-route",
               "fastapi_app_health_timeout": 3},
    )  # fmt: skip
    assert run.rc != 0, run.output[-3000:]
    assert "fail their health gate (their deploy locks are released)" in run.output
    # notes and typical answer 404 there; tiny answers every path (a bare ASGI app): it passes.
    for app in ("notes", "typical"):
        assert f'"{app}":' in run.output, app
    assert '"tiny":' not in run.output
    healthy(pebble_roots)  # the apps run and no lock is left
    hold = audit_lines("app1")[-1]
    assert (hold["action"], hold["outcome"]) == ("hold", "failed"), hold
