"""Security of the converged lab (issue #7), checked as an outsider and as an operator would:
secrets never in Ansible's output nor in any journal or log, the env file private, the app
unit running as its user and able to write only its state and runtime paths, the network
closed to hosts outside the allowed groups (`acme` is on the lab network and in no group),
/metrics not public, PostgreSQL scram-sha-256 only on its private address, the app's role
owning its database and nothing else."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from pathlib import Path

import pytest

from tests.helpers.logscan import (
    CENTRAL_JOURNAL,
    DEPLOY_AUDIT,
    JOURNAL,
    LETSENCRYPT,
    NGINX_ACCESS,
    NGINX_ERROR,
    PGBACKREST,
    POSTGRESQL,
    LogSource,
    scan_for_secrets,
)
from tests.helpers.probe import expected_verdicts, probe_command, probe_problems
from tests.helpers.role_defaults import role_defaults
from tests.lab.ansible_run import lab_exec, run_playbook
from tests.lab.cluster.conftest import SITE
from tests.lab.topology import APP_HOSTS, DB_IP, LAB_VARS, LB_IP, lab_secrets

LAB_APPS = LAB_VARS["fastapi_metal_apps"]
APP_PORTS = [int(app["fastapi_app_port"]) for app in LAB_APPS]
DATABASES = sorted(app["fastapi_app_name"] for app in LAB_APPS if "fastapi_app_database" in app)
OUTSIDER = "acme"  # on the lab network, in no inventory group
APP = "notes"
# A second secret, given only to the check run below: it must not surface anywhere either.
NEW_SECRET = f"fm-sec-{secrets.token_hex(12)}"
# What no output or log may hold: every secret of the lab inventory (its passwords, each app's
# secret env, the backups' passphrase: tests/lab/topology.py reads them from the inventory)
# and the new one. A failure names a secret by its position here, never by its value.
SECRETS = [*lab_secrets(), NEW_SECRET]


def leaked(text: str) -> list[int]:
    """The positions (1-based, as in SECRETS) of the secrets that ``text`` holds."""
    return [i + 1 for i, secret in enumerate(SECRETS) if secret in text]


def probe(source: str, *targets: str) -> dict[str, str]:
    """TCP connect from a lab container: open, refused (nothing listens) or timeout (dropped).
    Fails when a target got no firewall verdict (unresolved, unreachable, error) or when
    nothing was open: every call carries an open target as its positive control."""
    out = lab_exec(source, probe_command(targets))
    seen: dict[str, str] = json.loads(out.stdout)
    problems = probe_problems(seen, targets)
    if problems:
        pytest.fail(f"{source} probing {targets}: " + "; ".join(problems))
    return seen


def listening_tcp_ports(host: str) -> set[int]:
    out = lab_exec(host, "ss -Htln").stdout
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()}


def journal(host: str, unit: str) -> str:
    return lab_exec(host, f"journalctl -u {unit} --no-pager -n 40", check=False).stdout


# --- secrets -------------------------------------------------------------------------------


def test_a_changed_secret_previewed_with_v_diff_shows_no_secret(tmp_path: Path) -> None:
    # site.yml in check mode with -v --diff and a NEW database password: every task that
    # carries the secret (the env file, the PostgreSQL role) has a change to show, and must
    # show neither the new value nor the old one. The live release is named so that the run
    # finds it staged, whatever the rolling tests left live.
    live = lab_exec("app1", f"readlink -f /opt/{APP}/current/release").stdout.strip()
    live = live.rsplit("/", 1)[-1]
    defaults = role_defaults("fastapi_app")
    cache = Path(defaults["fastapi_app_build_cache"]).expanduser() / APP / f"{live}.tar.gz"
    assert cache.exists(), f"the live release {live} is not in the build cache {cache}"
    # The new secret goes in a file (-e @file), not on a command line others can list.
    extra = tmp_path / "extra.json"
    extra.touch(mode=0o600)
    extra.write_text(json.dumps({
        "lab_db_password": NEW_SECRET, "fastapi_app_release": live, "fastapi_metal_app": APP,
    }))  # fmt: skip
    run = run_playbook("site.yml", "--check", "--diff", "-v", "-e", f"@{extra}")
    assert run.rc == 0, run.tail()
    # Positions, so that a failure does not print a secret into the test log. The new one is
    # the last; the lab's old database password and every other secret of the inventory may
    # not be in the output either.
    found = leaked(run.output)
    assert not found, f"secrets #{found} of {len(SECRETS)} are in the output of the -v --diff run"
    # The secret-bearing tasks did report the change (with their output withheld): a new
    # secret is a new configuration of the release, whose directory check mode reports.
    for host in [*APP_HOSTS, "db1"]:
        assert run.recap[host]["changed"] >= 1, run.recap
    flat = " ".join(run.output.split())
    configured = flat.split("TASK [fastapi_app : Ensure the release's configuration directory", 1)
    assert f"/opt/{APP}/deploys/{live}+" in configured[1].split("TASK [", 1)[0]
    env_task = flat.split("TASK [fastapi_app : Ensure the release's environment file is written]")
    assert "no_log: true" in env_task[1].split("TASK [", 1)[0]


# Every log the deploy and the services write, per host. A scan finding no secret proves
# something only where it found its marker: each source gets one (tests/helpers/logscan.py).
LOG_SOURCES: dict[str, tuple[LogSource, ...]] = {
    "app1": (JOURNAL, DEPLOY_AUDIT),
    "app2": (JOURNAL, DEPLOY_AUDIT),
    "db1": (JOURNAL, POSTGRESQL, PGBACKREST),
    "lb1": (JOURNAL, NGINX_ACCESS, NGINX_ERROR, LETSENCRYPT),
    "mon1": (JOURNAL, CENTRAL_JOURNAL),
}
LOG_MARKER = f"fm-logscan-{secrets.token_hex(8)}"


def controller_audit_log() -> Path:
    defaults = role_defaults("fastapi_app")
    return Path(defaults["fastapi_app_controller_audit_log"]).expanduser()


def deploy_ids(host: str | None = None) -> list[str]:
    """Ids of the deploys and rollbacks in the controller's audit log (that reached ``host``):
    each host the run reached has an audit line with the same id."""
    path = controller_audit_log()
    lines = path.read_text().splitlines() if path.exists() else []
    runs = [json.loads(line) for line in lines if line.strip()]
    return [run["id"] for run in runs if host is None or host in run.get("hosts", {})]


@pytest.fixture(scope="module")
def log_markers(session_log_marker: str) -> dict[str, dict[str, str | tuple[str, ...]]]:
    """Per host and source, the tokens the source must hold: planted here, or already written.
    The journal must also hold the one planted when the session started (conftest.py)."""
    for host in LOG_SOURCES:
        lab_exec(host, f"logger -t fm-log-scan -- {LOG_MARKER}")
    # nginx: an outsider asks for the private /metrics with the marker as its query and request
    # id; the access log records the request, the error log its refusal ("access forbidden by
    # rule, ... request: "GET /metrics?<marker> ...").
    code = lab_exec(
        OUTSIDER,
        f"curl -sk -o /dev/null -w '%{{http_code}}' -H 'X-Request-ID: {LOG_MARKER}'"
        f" --resolve {SITE}:443:{LB_IP} 'https://{SITE}/metrics?{LOG_MARKER}'",
        check=False,
    ).stdout
    assert code == "403", f"/metrics?marker answered {code!r} to an outsider, not 403"
    # PostgreSQL logs a failed statement with its text.
    failed = lab_exec(
        "db1",
        f"runuser -u postgres -- psql -X -d postgres -c 'select \"{LOG_MARKER}\"'",
        check=False,
    )
    assert "does not exist" in failed.stderr, failed.stderr
    # certbot's log: a line appended (people read it; no program does).
    log = "/var/log/letsencrypt/letsencrypt.log"
    lab_exec("lb1", f"[ -f {log} ] && echo 'fm-log-scan {LOG_MARKER}' >> {log}", check=False)
    markers: dict[str, dict[str, str | tuple[str, ...]]] = {}
    for host, sources in LOG_SOURCES.items():
        markers[host] = {s.name: LOG_MARKER for s in sources if s != DEPLOY_AUDIT}
        markers[host][JOURNAL.name] = (session_log_marker, LOG_MARKER)
        # Every host's journal, shipped: the session's marker (logged on every host before
        # the first test) must be there, as this scan's own may not have arrived yet.
        if CENTRAL_JOURNAL in sources:
            markers[host][CENTRAL_JOURNAL.name] = session_log_marker
        # The deploy audit log: the id of the last deploy that reached the host (none before
        # test_20_rolling has deployed: the source then fails for want of a marker).
        if DEPLOY_AUDIT in sources and (ids := deploy_ids(host)):
            markers[host][DEPLOY_AUDIT.name] = ids[-1]
        # pgBackRest's log: the label of the repository's newest backup, which its backup
        # command logged ("new backup label = ..."; test_60 and the deploys before it take
        # backups in this session, the first converge took a full one).
        if PGBACKREST in sources:
            markers[host][PGBACKREST.name] = newest_backup_label(host)
    return markers


def newest_backup_label(host: str) -> str:
    stanza = role_defaults("pgbackrest")["pgbackrest_stanza"]
    info = lab_exec(host, f"runuser -u postgres -- pgbackrest --output=json --stanza={stanza} info")
    backups = json.loads(info.stdout)[0]["backup"]
    assert backups, f"{host}: the repository holds no backup"
    label: str = max(backups, key=lambda b: b["timestamp"]["stop"])["label"]
    return label


@pytest.mark.parametrize("host", list(LOG_SOURCES))
def test_no_secret_in_the_journal_or_any_log(
    host: str, log_markers: dict[str, dict[str, str | tuple[str, ...]]]
) -> None:
    problems = scan_for_secrets(
        lambda script: lab_exec(host, script).stdout,
        LOG_SOURCES[host],
        log_markers[host],
        SECRETS,
    )
    assert not problems, f"{host}:\n" + "\n".join(problems)


def test_no_secret_in_the_controllers_deploy_log() -> None:
    path = controller_audit_log()
    ids = deploy_ids()
    assert ids, f"no deploy recorded in {path} (test_20_rolling deploys before this test)"
    source = LogSource("controller audit", files=(str(path),))
    problems = scan_for_secrets(
        lambda script: (
            subprocess.run(
                ["bash", "-c", script], capture_output=True, text=True, check=True
            ).stdout
        ),
        [source],
        {source.name: ids[-1]},
        SECRETS,
    )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("host", list(APP_HOSTS))
def test_the_env_file_is_0640_root_and_the_app_group_only(host: str) -> None:
    env = f"/opt/{APP}/current/env"
    stat = lab_exec(host, f"stat -L -c '%a %U %G' {env} /opt/{APP}/current").stdout.split("\n")
    assert stat[0] == f"640 root {APP}"
    assert stat[1] == f"750 root {APP}"
    assert lab_exec(host, f"runuser -u {APP} -- grep -c ^DATABASE_URL= {env}").stdout == "1\n"
    denied = lab_exec(host, f"runuser -u nobody -- cat {env}", check=False)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr


# --- the app unit ------------------------------------------------------------------------


@pytest.mark.parametrize("host", list(APP_HOSTS))
def test_the_service_runs_as_the_app_user_with_exposure_at_most_2(host: str) -> None:
    procs = lab_exec(host, "ps -e -o unit=,user=,pid=,comm=").stdout.splitlines()
    mine = [p.split() for p in procs if p.startswith(f"{APP}.service")]
    assert len(mine) >= 2, f"the master and its workers: {mine}\n{journal(host, APP)}"
    assert {p[1] for p in mine} == {APP}, mine
    out = lab_exec(host, f"systemd-analyze security {APP}.service --no-pager").stdout
    exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", out)
    assert exposure, out
    level = float(exposure[1])
    assert level <= 2.0, out


@pytest.mark.parametrize("host", list(APP_HOSTS))
def test_the_app_user_can_write_nothing_of_its_code_or_configuration(host: str) -> None:
    # Ownership, whatever the sandbox: every file of the releases and of their configuration
    # is root's; the app user may write its state and runtime directories only.
    found = lab_exec(
        host,
        f"runuser -u {APP} -- find /opt/{APP} /opt/{APP}/current/ /opt/{APP}/current/release/ "
        f"/etc/systemd/system/{APP}.service /etc/systemd/system/{APP}.socket -writable",
        check=False,
    )
    # find read every path (an unreadable or missing one is an error, not "nothing writable").
    assert found.returncode == 0 and found.stderr == "", found
    assert found.stdout.split() == [], found.stdout
    # The same command does list what the user may write (its state directory).
    control = lab_exec(host, f"runuser -u {APP} -- find /var/lib/{APP} -maxdepth 0 -writable")
    assert control.stdout.split() == [f"/var/lib/{APP}"], control
    assert (
        lab_exec(host, f"runuser -u {APP} -- test -w /var/lib/{APP}", check=False).returncode == 0
    )
    assert lab_exec(host, f"runuser -u {APP} -- test -w /run/{APP}", check=False).returncode == 0


@pytest.mark.parametrize("host", list(APP_HOSTS))
def test_the_running_service_may_write_only_its_state_runtime_and_private_tmp(host: str) -> None:
    show = lab_exec(
        host,
        f"systemctl show {APP} -p ProtectSystem -p ProtectHome -p PrivateTmp -p ReadWritePaths"
        " -p NoNewPrivileges -p StateDirectory -p MainPID",
    ).stdout
    props = dict(line.split("=", 1) for line in show.splitlines())
    assert props["ProtectSystem"] == "strict" and props["ProtectHome"] == "yes", props
    assert props["PrivateTmp"] == "yes" and props["NoNewPrivileges"] == "yes", props
    assert props["ReadWritePaths"] == "", props
    # What the kernel enforces for the running main process: its mount table. Under
    # ProtectSystem=strict "/" is read-only; the writable mounts on real storage may only be
    # the state directory and the private /tmp and /var/tmp (systemd-private-*). The rest are
    # kernel and tmpfs mounts (/proc, /dev, /run ...).
    pid = props["MainPID"]
    mounts = lab_exec(host, f"cat /proc/{pid}/mountinfo").stdout.splitlines()
    table = []
    for line in mounts:
        fields = line.split()
        fstype = fields[fields.index("-") + 1]
        table.append((fields[4], fields[5].split(","), fstype, fields[3]))
    root = [row[1] for row in table if row[0] == "/"]
    assert root and "ro" in root[-1], (
        f"{host}: '/' is writable in the service's mount namespace: ProtectSystem=strict is not in"
        " effect (systemd sets up no mount namespace in a container without CAP_SYS_ADMIN;"
        " the lab must give its hosts that capability to behave like a server)"
    )
    virtual = {
        "proc",
        "sysfs",
        "tmpfs",
        "devtmpfs",
        "devpts",
        "mqueue",
        "hugetlbfs",
        "cgroup",
        "cgroup2",
    }
    allowed = {f"/var/lib/{APP}", "/run/.containerenv"}  # the latter: podman's marker file
    writable = [
        (point, source)
        for point, opts, fstype, source in table
        if "rw" in opts and fstype not in virtual
    ]
    # The table was read: the state directory is there, writable (else "no unexpected
    # writable mount" could come from a parse that found nothing).
    assert f"/var/lib/{APP}" in {p for p, _s in writable}, table
    unexpected = [
        (p, s)
        for p, s in writable
        if p not in allowed and not (p in ("/tmp", "/var/tmp") and "/systemd-private-" in s)
    ]
    assert unexpected == [], f"{host}: writable for the service: {unexpected}"


# --- the network -------------------------------------------------------------------------


def test_the_lb_exposes_only_80_and_443_to_an_outsider() -> None:
    # Every other port is dropped ("timeout"), not merely closed: a "refused" is a packet the
    # firewall let in to a port where nothing listens (yet).
    ports = listening_tcp_ports("lb1") | {80, 443, 8000, 5432}
    targets = [f"{LB_IP}:{p}" for p in sorted(ports)]
    seen = probe(OUTSIDER, *targets)
    assert seen == expected_verdicts(targets, open_ports={80, 443}), seen


def test_the_app_ports_and_postgresql_are_closed_to_an_outsider_open_to_their_peers() -> None:
    # Every app of the inventory has its port on every app host.
    apps = [f"{ip}:{port}" for ip in APP_HOSTS.values() for port in APP_PORTS]
    db = f"{DB_IP}:5432"
    # The outsider's positive control: the edge's 443, open to everyone, in the same probe.
    edge_https = f"{LB_IP}:443"
    seen = probe(OUTSIDER, edge_https, *apps, db)
    assert seen == {edge_https: "open"} | dict.fromkeys([*apps, db], "timeout"), seen
    # The allowed groups do reach them (so the check above is about the source, not a dead port).
    assert probe("lb1", *apps) == dict.fromkeys(apps, "open")
    assert probe("app1", db) == {db: "open"}
    # And an app host is not an lb: the other app host's ports are closed to it (beside the
    # database port, open to it: the same probe's positive control).
    other = [t for t in apps if t.startswith(f"{APP_HOSTS['app2']}:")]
    assert probe("app1", *other, db) == dict.fromkeys(other, "timeout") | {db: "open"}


def test_metrics_are_not_served_to_the_public_through_the_lb() -> None:
    # An outsider asks the edge for /metrics: denied (403/404). The lb itself still reaches
    # each app host's /metrics directly, which is how monitoring scrapes (the allow-list).
    out = lab_exec(
        OUTSIDER,
        f"curl -sk -o /dev/null -w '%{{http_code}}' --resolve {SITE}:443:{LB_IP} https://{SITE}/metrics",
        check=False,
    )
    assert out.stdout in ("403", "404"), (
        f"/metrics through the lb answered {out.stdout} to an outsider"
    )
    for ip in APP_HOSTS.values():
        code = lab_exec(
            "lb1", f"curl -s -o /dev/null -w '%{{http_code}}' http://{ip}:8000/metrics"
        ).stdout
        assert code == "200", code


# --- PostgreSQL ----------------------------------------------------------------------------


def psql(sql: str, db: str = "postgres") -> list[list[str]]:
    out = lab_exec("db1", f"runuser -u postgres -- psql -d {db} -XAt -F '|' -c \"{sql}\"")
    return [line.split("|") for line in out.stdout.splitlines()]


def test_pg_hba_has_no_trust_and_admits_tcp_only_with_scram_from_the_app_hosts() -> None:
    rules = psql(
        "select type, database, user_name, address, netmask, auth_method from pg_hba_file_rules"
    )
    assert rules, "pg_hba is empty"
    methods = {r[5] for r in rules}
    assert "trust" not in methods and methods <= {"peer", "scram-sha-256"}, rules
    tcp = [r for r in rules if r[0] != "local"]
    assert tcp and all(r[5] == "scram-sha-256" for r in tcp), tcp
    assert {r[3] for r in tcp} == set(APP_HOSTS.values()), tcp
    assert {r[4] for r in tcp} == {"255.255.255.255"}, tcp
    # Each app's database admits its own role only (the lab: notes and typical; tiny has none).
    assert {(r[1], r[2]) for r in tcp} == {(f"{{{db}}}", f"{{{db}}}") for db in DATABASES}, tcp


def test_passwords_are_scram_and_postgresql_listens_on_its_private_address_only() -> None:
    assert psql("show password_encryption") == [["scram-sha-256"]]
    stored = psql(
        "select rolname, left(rolpassword, 14) from pg_authid where rolpassword is not null"
    )
    assert sorted(stored) == [[db, "SCRAM-SHA-256$"] for db in DATABASES], stored
    listen = lab_exec("db1", "ss -Htln 'sport = :5432'").stdout.split("\n")
    addresses = {line.split()[3].rsplit(":", 1)[0] for line in listen if line.strip()}
    assert addresses == {DB_IP, "127.0.0.1"}, addresses


def test_the_app_role_owns_its_database_and_nothing_else() -> None:
    role = psql(
        "select rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls from pg_roles"
        " where rolname = 'notes'"
    )
    assert role == [["f"] * 5], role
    owned = psql("select datname from pg_database where datdba = 'notes'::regrole")
    assert owned == [["notes"]], owned
    # Nothing in the other databases belongs to it, and PUBLIC may not connect to its database.
    for db in ("postgres", "template1"):
        assert psql("select count(*) from pg_class where relowner = 'notes'::regrole", db) == [
            ["0"]
        ]
    acl = psql("select datacl from pg_database where datname = 'notes'")[0][0]
    assert not re.search(r"(^|[{,])=[A-Za-z]*c", acl), f"PUBLIC may connect: {acl}"


def test_the_app_role_cannot_reach_another_database() -> None:
    # From an app host, with the app's own credentials (read from its env file, so that no
    # password is on a command line): its database answers, the postgres database is refused.
    script = (
        "set -a; . /opt/notes/current/env; set +a; /opt/notes/current/release/venv/bin/python -c "
        '"import os, psycopg\n'
        "for db in ('notes', 'postgres'):\n"
        "    try:\n"
        "        psycopg.connect(os.environ['DATABASE_URL'], dbname=db, connect_timeout=3)\n"
        "        print(db, 'ok')\n"
        "    except psycopg.OperationalError as e: print(db, 'refused', 'pg_hba.conf' in str(e))\""
    )
    out = lab_exec("app1", script).stdout.split("\n")
    assert out[:2] == ["notes ok", "postgres refused True"], out
