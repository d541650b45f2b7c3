"""Observability on the lab (role monitoring, mon1): every target Prometheus derives from the
inventory is up; stopping an app on one host fires its alert in Alertmanager within the
rule's `for` plus a scrape and an evaluation interval, and resolves it when the app is back;
a burst of 5xx at the edge fires the edge's alert; the blackbox probe reports the served
certificates' real expiry; one request id is found in the central journal in both the
edge's and the app's line; deploys left markers in Prometheus and audit lines in the central
journal. Prometheus and Alertmanager listen on mon1's loopback: they are asked from mon1."""

from __future__ import annotations

import json
import re
import shlex
import time
import urllib.parse
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from tests.helpers.role_defaults import role_defaults
from tests.lab.ansible_run import INVENTORY, lab_exec
from tests.lab.cluster.conftest import LAB_HOSTS, edge
from tests.lab.firewall import (
    Listening,
    controller,
    firewall_differences,
    lab_source,
    listening_on_every_host,
    stranger,
)
from tests.lab.topology import ADDRESSES, APP_HOSTS, GROUPS, LAB_VARS

# When pytest collected this module: before the session's first test ran.
COLLECTED_AT = time.time()
MON = GROUPS["monitoring"][0]
MON_VARS: dict[str, Any] = yaml.safe_load((INVENTORY / "group_vars/monitoring.yml").read_text())
DEFAULTS = role_defaults("monitoring")
APPS: list[dict[str, Any]] = LAB_VARS["fastapi_metal_apps"]
TINY = next(a for a in APPS if a["fastapi_app_name"] == "tiny")
TINY_NAME = LAB_VARS["lab_tiny_name"]


def seconds(duration: str) -> float:
    """A Prometheus duration of one unit (5s, 15s, 1m) in seconds."""
    m = re.fullmatch(r"(\d+)([smh])", duration)
    assert m, duration
    return int(m[1]) * {"s": 1, "m": 60, "h": 3600}[m[2]]


SCRAPE = seconds(MON_VARS["monitoring_scrape_interval"])
EVALUATION = seconds(MON_VARS["monitoring_evaluation_interval"])


def api(port: int, path: str, **params: str) -> Any:
    """GET Prometheus's (9090) or Alertmanager's (9093) API on mon1's loopback."""
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    out = lab_exec(MON, f"curl -sf -m 10 {shlex.quote(f'http://127.0.0.1:{port}{path}{query}')}")
    return json.loads(out.stdout)


def query(expr: str) -> list[dict[str, Any]]:
    answer = api(9090, "/api/v1/query", query=expr)
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def firing(alertname: str, **labels: str) -> list[dict[str, Any]]:
    """The alerts Alertmanager holds (active) with this name and these labels."""
    alerts = api(9093, "/api/v2/alerts", active="true", silenced="false", inhibited="false")
    return [a for a in alerts if a["labels"].get("alertname") == alertname
            and all(a["labels"].get(k) == v for k, v in labels.items())]  # fmt: skip


def wait_for(what: str, check: Any, timeout: float, every: float = 1.0) -> float:
    """Poll until check() is truthy; the seconds it took. Fails naming `what` past timeout."""
    t0 = time.monotonic()
    while True:
        if check():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)


def lab_value(value: str) -> str:
    """A value of the lab's group_vars, with a "{{ lab_... }}" reference resolved."""
    m = re.fullmatch(r"\{\{\s*(\w+)\s*\}\}", value)
    return str(LAB_VARS[m[1]]) if m else value


def expected_targets() -> set[tuple[str, str]]:
    """(job, host or instance) of every target, derived from the inventory as the role does."""
    out = {("node", h) for h in LAB_HOSTS}
    out |= {("postgresql", h) for h in GROUPS["db"]}
    out |= {(job, h) for h in GROUPS["lb"] for job in ("nginx", "edge_log")}
    for app in APPS:
        name = app["fastapi_app_name"]
        if app.get("fastapi_app_metrics_path", "/metrics"):
            out |= {(f"app_{name}", h) for h in APP_HOSTS}
        out |= {("app_health", f"{h}/{name}") for h in APP_HOSTS}
        out.add(("edge", lab_value(app["nginx_server_names"][0])))
    return out | {(job, MON) for job in ("prometheus", "alertmanager", "blackbox")}


def seen_targets() -> dict[tuple[str, str], dict[str, Any]]:
    targets = api(9090, "/api/v1/targets", state="active")["data"]["activeTargets"]
    out = {}
    for t in targets:
        labels = t["labels"]
        job = labels["job"]
        key = {"app_health": f"{labels.get('host')}/{labels.get('app')}",
               "edge": labels.get("server_name", "")}.get(job, labels.get("host", ""))  # fmt: skip
        out[(job, key)] = t
    return out


def stop(host: str, app: str) -> None:
    lab_exec(host, f"systemctl stop {app}.socket {app}.service")


def start(host: str, app: str) -> None:
    lab_exec(host, f"systemctl start {app}.socket {app}.service")


@pytest.fixture(scope="module", autouse=True)
def apps_back_up() -> Any:
    """Whatever a test stops is started again, even when it fails."""
    yield
    for host in APP_HOSTS:
        for app in APPS:
            lab_exec(host, f"systemctl start {app['fastapi_app_name']}.socket", check=False)


def test_a_every_target_from_the_inventory_is_up() -> None:
    """Every target the inventory implies, and only those, up; the probes behind them
    succeeding; no alert. The drills before this module (releases failing their gate, a host
    left drained) fire alerts of their own and leave failed probes in the last scrape: each
    clears once its window has passed, so the lab gets up to 3 minutes to be quiet. (The
    restore drill, test_60, runs after this module: its alerts took a minute to clear.)"""
    want = expected_targets()
    health = {k[1] for k in want if k[0] == "app_health"}

    def problems() -> list[str]:
        seen = seen_targets()
        out = [f"missing {sorted(want - set(seen))}"] if want - set(seen) else []
        out += [f"unexpected {sorted(set(seen) - want)}"] if set(seen) - want else []
        out += [f"{k} {seen[k]['health']}: {seen[k]['lastError']}"
                for k in sorted(want & set(seen)) if seen[k]["health"] != "up"]  # fmt: skip
        # The probes behind `up` see their targets: each app answers 2xx on each host, the
        # edge's probe verified TLS against pebble's root, PostgreSQL answers the exporter.
        ok = {f"{r['metric']['host']}/{r['metric']['app']}"
              for r in query('probe_success{job="app_health"} == 1')}  # fmt: skip
        out += [f"app_health failing: {sorted(health - ok)}"] if health - ok else []
        edge_ok = len(query('probe_success{job="edge"} == 1'))
        out += [f"edge probes succeeding: {edge_ok} of {len(APPS)}"] if edge_ok != len(APPS) else []
        # Per host: one healthy instance must not stand for the others.
        for metric, group in (("pg_up", "db"), ("nginx_up", "lb")):
            up = {str(r["metric"].get("host")) for r in query(f"{metric} == 1")}
            if up != set(GROUPS[group]):
                out.append(f"{metric} == 1 on {sorted(up)}, not on the {group} hosts")
        # The filesystem collector reports each host's own mounts (the lab's tmpfs /tmp) and
        # not the files podman mounts over /etc: those are the CI machine's disk, which the
        # run itself fills fast enough for DiskFillingUp's prediction.
        fs = {(r["metric"]["host"], r["metric"]["mountpoint"])
              for r in query("node_filesystem_avail_bytes")}  # fmt: skip
        if {h for h, m in fs if m == "/tmp"} != set(LAB_HOSTS) or any(
            m.startswith("/etc/") for _host, m in fs
        ):
            out.append(f"filesystems: {sorted(fs)}")
        alerts = sorted(r["metric"]["alertname"] for r in query("ALERTS"))
        return out + ([f"alerts: {alerts}"] if alerts else [])

    t0 = time.monotonic()
    while (left := problems()) and time.monotonic() - t0 < 180:
        time.sleep(5)
    assert not left, "; ".join(left)
    print(f"\nevery target up, every probe succeeding, no alert ({time.monotonic() - t0:.0f} s)")


def test_b_an_app_stopped_on_one_host_fires_its_alert_and_resolves() -> None:
    host = sorted(APP_HOSTS)[0]
    rule_for = seconds(MON_VARS["monitoring_alert_app_health_for"])
    assert not firing("AppHealthFailing", host=host, app="notes")
    stop(host, "notes")
    stopped = time.monotonic()
    try:
        took = wait_for("AppHealthFailing in Alertmanager",
                        lambda: firing("AppHealthFailing", host=host, app="notes"),
                        timeout=rule_for + SCRAPE + EVALUATION + 60)  # fmt: skip
        budget = rule_for + SCRAPE + EVALUATION + 5
        print(
            f"\nAppHealthFailing fired {took:.1f} s after the stop (for {rule_for:.0f} s "
            f"+ scrape {SCRAPE:.0f} s + evaluation {EVALUATION:.0f} s = {budget - 5:.0f} s)"
        )
        assert took <= budget, f"fired after {took:.1f} s, over {budget:.0f} s"
        # The other host's app, and the other apps on this host, stay quiet.
        assert not firing("AppHealthFailing", host=sorted(APP_HOSTS)[1])
        assert not firing("AppHealthFailing", host=host, app="tiny")
    finally:
        start(host, "notes")
    back = time.monotonic()
    took = wait_for("AppHealthFailing resolved",
                    lambda: not firing("AppHealthFailing", host=host, app="notes"),
                    timeout=SCRAPE + 2 * EVALUATION + 60)  # fmt: skip
    print(f"resolved {took:.1f} s after the start ({back - stopped:.0f} s stopped)")


def test_c_a_burst_of_5xx_at_the_edge_fires_the_ratio_alert(pebble_roots: Path) -> None:
    """tiny stopped on every app host: the edge answers 503 (Retry-After) for its name."""
    assert not firing("EdgeErrorRatioHigh", server_name=TINY_NAME)
    for host in APP_HOSTS:
        stop(host, "tiny")
    try:
        statuses = [tiny_request(pebble_roots) for _request in range(40)]
        assert statuses.count("503") >= 35, statuses
        rule_for = seconds(MON_VARS["monitoring_alert_edge_5xx_for"])
        took = wait_for("EdgeErrorRatioHigh in Alertmanager",
                        lambda: firing("EdgeErrorRatioHigh", server_name=TINY_NAME),
                        timeout=rule_for + SCRAPE + EVALUATION + 60)  # fmt: skip
        print(f"\nEdgeErrorRatioHigh fired {took:.1f} s after 40 requests answered 503")
        # The sites that answered well stay quiet: the ratio is per name.
        assert not firing("EdgeErrorRatioHigh", server_name=LAB_VARS["lab_site_name"])
    finally:
        for host in APP_HOSTS:
            start(host, "tiny")
    wait_for("tiny answers through the edge again", lambda: tiny_request(pebble_roots) == "200", 30)


def tiny_request(roots: Path) -> str:
    """The status code of one request for tiny through the edge."""
    return edge("/", roots, "-o", "/dev/null", "-w", "%{http_code}", site=TINY_NAME).stdout.strip()


def test_d_the_probe_reports_the_served_certificates_real_expiry() -> None:
    """probe_ssl_earliest_cert_expiry equals the earliest notAfter of the certificates the edge
    serves, read here with a TLS client of our own. (That is the leaf's with pebble's issuers,
    which outlive it: this shows the probe reads the served certificate, not that it would
    notice an intermediate expiring first.)"""
    name = LAB_VARS["lab_site_name"]
    chain = lab_exec(
        MON, f"openssl s_client -connect {shlex.quote(name)}:443 -servername {shlex.quote(name)} "
        "-showcerts </dev/null 2>/dev/null"
    ).stdout  # fmt: skip
    pems = re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", chain, re.S)
    assert pems, chain[:500]
    not_after = min(x509.load_pem_x509_certificate(p.encode()).not_valid_after_utc for p in pems)
    got = query(f'probe_ssl_earliest_cert_expiry{{job="edge", server_name="{name}"}}')
    assert len(got) == 1, got
    reported = datetime.fromtimestamp(float(got[0]["value"][1]), tz=UTC)
    print(f"\nthe edge's chain expires {not_after.isoformat()}; the probe: {reported.isoformat()}")
    assert reported == not_after
    assert reported > datetime.now(tz=UTC)


def central(grep: str, *fields: str) -> list[dict[str, Any]]:
    """Entries of the central journal on mon1 matching `grep`, as JSON."""
    out = lab_exec(
        MON, f"journalctl -D /var/log/journal/remote --grep {shlex.quote(grep)} -o json --all "
        f"--output-fields={','.join(('MESSAGE', '_HOSTNAME', 'SYSLOG_IDENTIFIER', *fields))}",
        check=False,
    )  # fmt: skip
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def test_e_one_request_id_is_found_at_the_edge_and_in_the_app(pebble_roots: Path) -> None:
    request_id = f"fm-trace-{uuid.uuid4().hex}"
    out = edge("/health", pebble_roots, "-H", f"X-Request-ID: {request_id}", "-D", "-")
    assert out.returncode == 0 and request_id in out.stdout, out.stdout
    served_by = re.search(r"(?i)x-app-release: (\S+)", out.stdout)
    assert served_by, out.stdout

    def both() -> bool:
        hosts = {e.get("_HOSTNAME") for e in central(request_id)}
        return GROUPS["lb"][0] in hosts and bool(hosts & set(APP_HOSTS))

    took = wait_for("the request in the central journal from lb1 and an app host", both, 60, 2)
    entries = central(request_id)
    edge_line = next(e for e in entries if e["_HOSTNAME"] == GROUPS["lb"][0])
    app_line = next(e for e in entries if e["_HOSTNAME"] in APP_HOSTS)
    assert edge_line["SYSLOG_IDENTIFIER"] == "nginx_access"
    assert json.loads(edge_line["MESSAGE"])["request_id"] == request_id
    assert json.loads(app_line["MESSAGE"])["request_id"] == request_id
    print(
        f"\nfound in the central journal {took:.1f} s after the request: "
        f"{edge_line['_HOSTNAME']} (nginx) and {app_line['_HOSTNAME']} (app)"
    )


def test_f_deploys_left_markers_and_audit_lines_in_one_place() -> None:
    """The rolling upgrades and rollbacks of test_20 and test_30: a marker per app and host in
    Prometheus, written in this session and saying what the host's last audit line says (the
    same action, outcome and release; a successful one names the release the host serves), and
    each host's audit lines in the central journal. Textfiles outlive sessions on a kept lab:
    a marker older than this session is not evidence of this session's deploys."""
    markers = query('fastapi_metal_deploy_finished_timestamp_seconds{app="notes"}')
    assert {m["metric"]["host"] for m in markers} == set(APP_HOSTS), markers
    for marker in markers:
        host, labels = marker["metric"]["host"], marker["metric"]
        lines = lab_exec(host, "cat /var/log/fastapi-metal/notes-deploys.jsonl").stdout.splitlines()
        assert lines, host
        last = json.loads(lines[-1])
        written = float(marker["value"][1])
        # The marker's value is whole seconds (rounded): a second of slack.
        assert written >= COLLECTED_AT - 1, (
            f"{host}: the marker was written {COLLECTED_AT - written:.0f} s before this session"
        )
        said = (labels.get("action"), labels.get("outcome"), labels.get("release"))
        assert said == (last["action"], last["outcome"], last.get("to_release") or ""), (
            host, labels, last)  # fmt: skip
        assert last["action"] in ("deploy", "rollback", "hold"), last
        if last["outcome"] == "success":
            serving = lab_exec(host, "readlink -f /opt/notes/current/release").stdout.strip()
            assert labels["release"] == serving.rsplit("/", 1)[-1], (host, labels, serving)
    for host in APP_HOSTS:
        lines = lab_exec(host, "cat /var/log/fastapi-metal/notes-deploys.jsonl").stdout.splitlines()
        assert lines, host
        last = json.loads(lines[-1])
        shipped = [
            e for e in central(last["id"]) if e.get("SYSLOG_IDENTIFIER") == "fastapi-metal-audit"
        ]
        assert any(json.loads(e["MESSAGE"]) == last for e in shipped if e["_HOSTNAME"] == host), (
            host, last, shipped)  # fmt: skip


@pytest.fixture(scope="module")
def listening_now() -> Listening:
    return listening_on_every_host()


@pytest.mark.parametrize("source", ["controller", "acme", *LAB_HOSTS])
def test_g_every_port_of_every_host_answers_only_whom_the_firewall_admits(
    source: str, listening_now: Listening
) -> None:
    """Every port each host listens on (`ss -Htln`: the exporters, the central journal,
    Prometheus and Alertmanager on mon1's loopback ...) and every port of the network spec,
    probed from the controller (SSH, and the edge's 80 and 443), from `acme` (on the lab
    network, in no group: the edge's 80 and 443 only), and from each inventory host: "open"
    (or "refused" where nothing listens) only where docs/security.md admits that source's
    group (the exporters from the monitoring hosts, the central journal from the inventory's
    hosts ...), dropped ("timeout") everywhere else. tests/lab/firewall.py states the spec;
    every probe has its open target."""
    if source == "controller":
        where = controller()
    elif source in ADDRESSES:
        where = lab_source(source)
    else:
        where = stranger(source)
    wrong = firewall_differences(where, listening_now)
    assert not wrong, f"from {source} (target: (expected, seen)): {wrong}"


def test_h_every_hosts_journal_is_in_one_place(session_log_marker: str) -> None:
    """The token every host logged at the session's start is in the central journal from
    each host; PostgreSQL's log reaches it too (a failed statement, logged by the server
    under `postgres`); the daily vacuum does vacuum it: a journal file older than the
    retention (a copy of a real one, named as journal-remote names an archived file, dated
    twice the retention back) is deleted and the directory's disk usage shrinks, while the
    live files, and the session's token in them, stay."""

    def hosts_with_token() -> set[str]:
        return {e.get("_HOSTNAME", "") for e in central(session_log_marker)}

    wait_for(
        "the session's token from every host", lambda: hosts_with_token() == set(LAB_HOSTS), 60, 2
    )
    token = f"fm_pg_{uuid.uuid4().hex}"
    db = GROUPS["db"][0]
    failed = lab_exec(db, f"runuser -u postgres -- psql -X -d postgres -c 'select {token}'", False)
    assert "does not exist" in failed.stderr, failed.stderr

    def from_postgres() -> list[dict[str, Any]]:
        return [e for e in central(token) if e.get("SYSLOG_IDENTIFIER") == "postgres"]

    wait_for("PostgreSQL's error in the central journal", from_postgres, 60, 2)
    assert {e["_HOSTNAME"] for e in from_postgres()} == {db}
    unit = "fastapi-metal-journal-vacuum.service"
    remote = "/var/log/journal/remote"
    max_age = {**DEFAULTS, **LAB_VARS, **MON_VARS}["monitoring_journal_max_age"]
    days = re.fullmatch(r"(\d+)d", str(max_age))
    assert days, f"monitoring_journal_max_age {max_age!r}: this test reads days only"
    old = int((time.time() - 2 * int(days[1]) * 86400) * 1e6)
    planted = f"{remote}/remote-fm-vacuum@{uuid.uuid4().hex}-{1:016x}-{old:016x}.journal"

    def usage() -> int:
        return int(lab_exec(MON, f"du -sB1 {remote}").stdout.split()[0])

    # The biggest journal file, copied fully allocated (its usage is its size).
    lab_exec(MON, f'cp --sparse=never "$(ls -S {remote}/*.journal | head -n 1)" {planted}')
    try:
        before = usage()
        vacuum = lab_exec(MON, f"systemctl start {unit}; systemctl show -p Result --value {unit}")
        gone = lab_exec(MON, f"test ! -e {planted}", check=False).returncode == 0
        after = usage()
    finally:
        lab_exec(MON, f"rm -f {planted}")
    assert vacuum.stdout.strip() == "success", vacuum.stdout
    assert gone, f"the vacuum left a journal file {2 * int(days[1])} days old (over {max_age})"
    assert after < before, f"the central journal's usage did not shrink: {before} -> {after}"
    assert hosts_with_token() == set(LAB_HOSTS), "the vacuum took the live journal with it"


def test_i_a_failed_certificate_renewal_fires_its_alert() -> None:
    """certbot.service failing on the lb host (its ExecStart replaced, for this test, by a
    runtime drop-in) reaches Prometheus through the node exporter's systemd collector."""
    lb = GROUPS["lb"][0]
    dropin = "/run/systemd/system/certbot.service.d/fm-test-fail.conf"
    assert not firing("CertificateRenewalFailing", host=lb)
    lab_exec(lb, f"mkdir -p {Path(dropin).parent} && printf '[Service]\\nExecStart=\\n"
             f"ExecStart=/bin/false\\n' > {dropin} && systemctl daemon-reload")  # fmt: skip
    try:
        failed = lab_exec(lb, "systemctl start certbot.service", check=False)
        assert failed.returncode != 0
        took = wait_for("CertificateRenewalFailing in Alertmanager",
                        lambda: firing("CertificateRenewalFailing", host=lb),
                        timeout=SCRAPE + 2 * EVALUATION + 30)  # fmt: skip
        print(f"\nCertificateRenewalFailing fired {took:.1f} s after certbot.service failed")
    finally:
        lab_exec(lb, f"rm -f {dropin} && systemctl daemon-reload && "
                 "systemctl reset-failed certbot.service")  # fmt: skip
    wait_for(
        "CertificateRenewalFailing resolved",
        lambda: not firing("CertificateRenewalFailing", host=lb),
        SCRAPE + 2 * EVALUATION + 30,
    )


def test_j_a_server_left_drained_fires_its_alert() -> None:
    """A server drained at the edge (the drain helper records since when) fires
    HostLeftDrained once it stays drained past the threshold, not before."""
    lb = GROUPS["lb"][0]
    host = sorted(APP_HOSTS)[1]
    server = f"{APP_HOSTS[host]}:{TINY['fastapi_app_port']}"
    threshold = int(MON_VARS["monitoring_alert_drained_seconds"])
    assert not firing("HostLeftDrained", server=server)
    lab_exec(lb, f"fastapi-metal-nginx upstream {server} down")
    try:
        took = wait_for("HostLeftDrained in Alertmanager",
                        lambda: firing("HostLeftDrained", server=server),
                        timeout=threshold + SCRAPE + 2 * EVALUATION + 30)  # fmt: skip
        print(f"\nHostLeftDrained fired {took:.1f} s after the drain (threshold {threshold} s)")
        assert took >= threshold - EVALUATION, "fired before the threshold"
    finally:
        lab_exec(lb, "fastapi-metal-nginx undrain-all")
    wait_for("HostLeftDrained resolved", lambda: not firing("HostLeftDrained", server=server),
             SCRAPE + 2 * EVALUATION + 30)  # fmt: skip
    assert lab_exec(lb, "fastapi-metal-nginx drained").stdout.split() == []
