"""The pgbackrest role on the db host: WAL archived into an encrypted repository, a first full
backup, timers, a metrics file - and the drills: PostgreSQL killed during a backup leaves the
repository usable, and a point-in-time restore brings back exactly the rows written before the
chosen moment. Durations are printed and written to .lab/results/pgbackrest-drill.json."""

from __future__ import annotations

import json
import re
import shlex
import time
from typing import Any

import testinfra

from conftest import REPO_ROOT

STANZA = "main"
REPO = "/var/lib/pgbackrest"
LAST_DIFF = f'pgbackrest_backup_last_completion_timestamp_seconds{{stanza="{STANZA}",type="diff"}}'
BULK = (
    "CREATE TABLE IF NOT EXISTS bulk AS SELECT g, md5(g::text) AS h FROM generate_series(1, %d) g"
)
SERVICE = "postgresql@15-main"
RESULTS = REPO_ROOT / ".lab" / "results" / "pgbackrest-drill.json"
MEASURED: dict[str, Any] = {}


# No command of the drills takes a minute; Debian's PostgreSQL unit waits an hour for a stop
# that does not come. A command past this limit is killed and the test fails with the state of
# the server, the processes and pgBackRest's log, instead of waiting (a CI run once lost an
# hour in this scenario).
COMMAND_LIMIT = 300
STATE = (
    f"systemctl status --no-pager -l {SERVICE} 'pgbackrest-backup@*'; "
    "ps -eo pid,ppid,stat,etime,args --forest; "
    "tail -n 30 /var/log/pgbackrest/*.log /var/log/postgresql/*.log"
)


def sh(host: testinfra.host.Host, command: str, check: bool = True) -> str:
    out = host.run(f"timeout -k 10 {COMMAND_LIMIT} sh -c {shlex.quote(command)}")
    if out.rc in (124, 137):
        state = host.run(STATE)
        raise AssertionError(
            f"{command}: still running after {COMMAND_LIMIT} s, killed\n{state.stdout[-6000:]}"
        )
    if check:
        assert out.rc == 0, f"{command}: rc {out.rc}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    return out.stdout.strip()


def sql(host: testinfra.host.Host, query: str, db: str = "drill") -> str:
    return sh(host, f"runuser -u postgres -- psql -XAtq -d {db} -c {shlex.quote(query)}")


def info(host: testinfra.host.Host) -> dict[str, Any]:
    out = sh(host, f"runuser -u postgres -- pgbackrest --output=json --stanza={STANZA} info")
    stanzas: list[dict[str, Any]] = json.loads(out)
    return stanzas[0]


def backup(host: testinfra.host.Host, kind: str = "full") -> float:
    t0 = time.monotonic()
    sh(host, f"runuser -u postgres -- pgbackrest --stanza={STANZA} --type={kind} backup")
    return round(time.monotonic() - t0, 2)


def insert(host: testinfra.host.Host, phase: str, rows: int) -> None:
    assert phase.isalpha() and isinstance(rows, int)
    sql(host, "INSERT INTO drill (phase) SELECT '%s' FROM generate_series(1, %d)" % (phase, rows))  # noqa: S608, UP031


def record(**values: Any) -> None:
    MEASURED.update(values)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(MEASURED, indent=1) + "\n")
    print(values)


def test_the_repository_holds_a_first_full_backup_and_is_encrypted(
    host: testinfra.host.Host,
) -> None:
    stanza = info(host)
    assert stanza["status"]["code"] == 0, stanza["status"]
    assert [b["type"] for b in stanza["backup"]][:1] == ["full"], stanza["backup"]
    assert stanza["cipher"] == "aes-256-cbc"
    conf = host.file("/etc/pgbackrest/pgbackrest.conf")
    assert (conf.user, conf.group, conf.mode) == ("root", "postgres", 0o640)
    # Encrypted: the backup's manifest on disk starts with the header of pgBackRest's
    # aes-256-cbc (OpenSSL's "Salted__" and a salt); in plain text it starts "[backrest]".
    label = stanza["backup"][0]["label"]
    manifest = f"{REPO}/backup/{STANZA}/{label}/backup.manifest"
    head = sh(host, f"head -c 8 {manifest} | od -An -tx1 | tr -d ' \\n'")
    assert head == b"Salted__".hex(), f"{manifest} starts with {bytes.fromhex(head)!r}"


def test_wal_is_archived_and_the_timers_are_on(host: testinfra.host.Host) -> None:
    assert sql(host, "SHOW archive_mode", db="postgres") == "on"
    before = int(sql(host, "SELECT archived_count FROM pg_stat_archiver", db="postgres"))
    sh(host, f"runuser -u postgres -- pgbackrest --stanza={STANZA} check")  # switches and waits
    after = int(sql(host, "SELECT archived_count FROM pg_stat_archiver", db="postgres"))
    assert after > before, (before, after)
    for kind in ("full", "diff"):
        timer = host.service(f"pgbackrest-backup-{kind}.timer")
        assert timer.is_enabled and timer.is_running, kind


def test_the_metrics_file_gives_the_age_of_the_last_good_backup(host: testinfra.host.Host) -> None:
    sh(host, "systemctl start pgbackrest-backup@diff.service")  # what the daily timer runs
    text = host.file("/var/lib/prometheus/node-exporter/pgbackrest.prom").content_string
    stop = info(host)["backup"][-1]["timestamp"]["stop"]
    assert f"{LAST_DIFF} {stop}" in text, text
    assert f'pgbackrest_stanza_status_code{{stanza="{STANZA}"}} 0' in text, text
    assert "pgbackrest_archiver_failed_total 0" in text, text


def test_postgresql_killed_during_a_backup_leaves_the_repository_usable(
    host: testinfra.host.Host,
) -> None:
    sh(host, "runuser -u postgres -- createdb drill", check=False)
    # Enough data that the backup is still copying when PostgreSQL dies.
    sql(
        host,
        BULK % 1_500_000,
    )
    # The backup as the weekly timer runs it: its unit, whose ExecStopPost writes the metrics.
    unit = "pgbackrest-backup@full.service"
    log = f"/var/log/pgbackrest/{STANZA}-backup.log"
    started_before = sh(host, f"grep -c 'backup command begin' {log}", check=False) or "0"
    began = time.time()
    sh(host, f"systemctl start --no-block {unit}")
    deadline = time.monotonic() + 30
    while sh(host, f"grep -c 'backup command begin' {log}", check=False) == started_before:
        assert time.monotonic() < deadline, "the backup never started"
        time.sleep(0.1)
    time.sleep(0.5)
    sh(host, f"systemctl kill -s SIGKILL {SERVICE}")
    deadline = time.monotonic() + 120
    while sh(host, f"systemctl is-active {unit}", check=False) in ("active", "activating"):
        assert time.monotonic() < deadline, "the interrupted backup never ended"
        time.sleep(0.5)
    result = sh(host, f"systemctl show -p Result --value {unit}", check=False)
    sh(host, f"systemctl reset-failed {unit}", check=False)
    assert result != "success", "the kill came after the backup: the drill proved nothing"
    # The failed run still rewrote the metrics (what an alert on the backup's age reads).
    metrics = host.file("/var/lib/prometheus/node-exporter/pgbackrest.prom").content_string
    written = re.search(r"^pgbackrest_metrics_written_timestamp_seconds (\d+)$", metrics, re.M)
    assert written and int(written[1]) >= int(began), metrics
    sh(host, f"systemctl start {SERVICE}")
    seconds = backup(host, "full")
    stanza = info(host)
    assert stanza["status"]["code"] == 0, stanza["status"]
    verify = host.run(f"runuser -u postgres -- pgbackrest --stanza={STANZA} verify")
    assert verify.rc == 0, verify.stdout + verify.stderr
    size = stanza["backup"][-1]["info"]["repository"]["delta"]
    record(
        interrupted_backup_result=result,
        full_backup_after_kill_s=seconds,
        full_backup_repo_bytes=size,
    )


def test_a_point_in_time_restore_brings_back_exactly_the_rows_written_before(
    host: testinfra.host.Host,
) -> None:
    n, m, k = 100, 50, 25
    sql(host, "DROP TABLE IF EXISTS drill; CREATE TABLE drill (id serial PRIMARY KEY, phase text)")
    insert(host, "n", n)
    seconds = backup(host, "diff")
    insert(host, "m", m)
    time.sleep(1.1)
    target = sql(host, "SELECT clock_timestamp()")
    time.sleep(1.1)
    insert(host, "k", k)
    sql(host, "DROP TABLE drill")
    # The WAL of all of it in the repository (check switches the segment and waits for it).
    t0 = time.monotonic()
    sh(host, f"runuser -u postgres -- pgbackrest --stanza={STANZA} check")
    archive_lag = round(time.monotonic() - t0, 2)
    t0 = time.monotonic()
    sh(host, f"systemctl stop {SERVICE}")
    sh(host, f"runuser -u postgres -- pgbackrest --stanza={STANZA} --delta --type=time "
             f"--target={shlex.quote(target)} --target-action=promote restore")  # fmt: skip
    sh(host, f"systemctl start {SERVICE}")
    deadline = time.monotonic() + 120
    while sql(host, "SELECT pg_is_in_recovery()", db="postgres") != "f":
        assert time.monotonic() < deadline, "PostgreSQL never left recovery"
        time.sleep(0.5)
    restore = round(time.monotonic() - t0, 2)
    counts = sql(host, "SELECT phase || '=' || count(*) FROM drill GROUP BY phase ORDER BY phase")
    assert counts.split() == [f"m={m}", f"n={n}"], counts
    # Backups keep working on the new timeline.
    assert backup(host, "incr") > 0
    record(
        diff_backup_s=seconds, archive_check_s=archive_lag, pitr_restore_s=restore, target=target
    )
