"""Three apps side by side on the same hosts (the lab inventory's fastapi_metal_apps): the
reference app (notes), a typical project not written for this one (typical) and a bare ASGI
app pinned by uv.lock (tiny). Each is served over HTTPS at its own name with a certificate of
its own; a rolling upgrade of one under load drops nothing and restarts no other."""

from __future__ import annotations

import json
import re
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.lab.ansible_run import ROOT, lab_exec, run_playbook
from tests.lab.capacity import Capacity, zero_drop_problems
from tests.lab.cluster.conftest import ROLLOUT_FRACTION
from tests.lab.loadgen import LoadGenerator, LoadResult
from tests.lab.topology import APP_HOSTS, LAB_VARS, LB_IP

APPS = {app["fastapi_app_name"]: app for app in LAB_VARS["fastapi_metal_apps"]}
NAMES = {
    "notes": LAB_VARS["lab_site_name"],
    "typical": LAB_VARS["lab_typical_name"],
    "tiny": LAB_VARS["lab_tiny_name"],
}
# What each app answers at a path of its own, through its own name.
ANSWERS = {
    "notes": ("/health", '"status":"healthy"'),
    "typical": (APPS["typical"]["fastapi_app_health_path"], "true"),
    "tiny": ("/", '"hello": "lab"'),
}
RESULTS = ROOT / ".lab" / "results"
# The loads on the three apps during one app's rollout add up to ROLLOUT_FRACTION of the
# capacity the session measured (on notes' mix): most of it on the app that rolls.
SHARES = {"typical": 4 / 6, "notes": 1 / 6, "tiny": 1 / 6}
# Each run under load goes on at least this long, whatever the rollout takes.
MIN_LOAD_SECONDS = 20


def https(name: str, path: str, roots: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """curl to one app's name through the edge, verifying its certificate."""
    return subprocess.run(
        ["curl", "-s", "-m", "10", "--cacert", str(roots), "--resolve", f"{name}:443:{LB_IP}",
         *args, f"https://{name}{path}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def certificate_names(name: str, roots: Path) -> list[str]:
    """The DNS names of the certificate the edge presents for `name` (SNI), verified."""
    context = ssl.create_default_context(cafile=str(roots))
    with (
        socket.create_connection((LB_IP, 443), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=name) as tls,
    ):
        cert = tls.getpeercert()
    assert cert is not None
    names: Any = cert.get("subjectAltName", ())
    return sorted(str(value) for kind, value in names if kind == "DNS")


def started(host: str, app: str) -> str:
    """When the app's Gunicorn master started on the host: changes with every restart."""
    out = lab_exec(host, f"systemctl show -p ExecMainStartTimestampMonotonic --value {app}")
    return out.stdout.strip()


def release_of(host: str, app: str) -> str:
    return lab_exec(host, f"readlink -f /opt/{app}/current/release").stdout.strip().rsplit("/")[-1]


@pytest.mark.parametrize("app", sorted(NAMES))
def test_each_app_is_served_at_its_own_name_with_a_certificate_of_its_own(
    app: str, pebble_roots: Path
) -> None:
    path, answer = ANSWERS[app]
    out = https(NAMES[app], path, pebble_roots, "-w", "\n%{http_code}")
    body, _newline, code = out.stdout.rpartition("\n")
    compact = body.replace(", ", ",").replace(": ", ":")
    assert code == "200" and answer.replace(", ", ",").replace(": ", ":") in compact, out
    # Its own certificate, from the lab's ACME server: it names this app's site only.
    assert certificate_names(NAMES[app], pebble_roots) == [NAMES[app]]
    # And every app answers on every app host, at its own port (only the lb may ask).
    for ip in APP_HOSTS.values():
        port = APPS[app]["fastapi_app_port"]
        direct = lab_exec(
            "lb1", f"curl -s -m 3 -o /dev/null -w '%{{http_code}}' http://{ip}:{port}{path}"
        )
        assert direct.stdout == "200", (app, ip, direct.stdout)


def test_a_name_the_inventory_does_not_list_gets_no_answer(pebble_roots: Path) -> None:
    # The positive control is the test above (listed names answer); an unknown name's TLS
    # handshake is refused by the default server (ssl_reject_handshake: the "unrecognized
    # name" alert, curl's 35), not answered with another site's certificate (curl's 60) nor
    # by an unreachable edge (7, 28): as molecule/edge's test_unknown_names_get_no_answer.
    out = https("other.lab.test", "/", pebble_roots, "-S")  # -S: curl names its error
    assert out.returncode == 35 and "unrecognized name" in out.stderr, out
    assert out.stdout == "", out


def test_the_typical_projects_first_user_logs_in_through_its_edge(pebble_roots: Path) -> None:
    """The after_migrate step of typical seeded its first user: the login proves it, with the
    inventory's secret (and a near miss is refused, so the check can fail)."""
    secret = APPS["typical"]["fastapi_app_secret_env"]
    user = secret["FIRST_SUPERUSER"]
    password = LAB_VARS["lab_typical_first_password"]

    def login(pw: str) -> subprocess.CompletedProcess[str]:
        body = json.dumps({"username": user, "password": pw})
        return https(NAMES["typical"], "/api/v1/login/access-token", pebble_roots,
                     "-H", "Content-Type: application/json", "-d", body,
                     "-w", "\n%{http_code}")  # fmt: skip

    good, bad = login(password), login(password + "x")
    assert good.stdout.endswith("\n200") and "access_token" in good.stdout, good
    assert bad.stdout.endswith("\n400"), bad


def hold(loads: dict[str, LoadGenerator], seconds: float) -> None:
    """Keep the loads on until each has sent `seconds` of requests (a stalled generator must
    not hang the suite: at most 120 s more)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(g.sent < seconds * g.rate for g in loads.values()):
        time.sleep(0.5)


def verdict(result: LoadResult, capacity: Capacity, fraction: float) -> None:
    problems = zero_drop_problems(result, capacity, min_seconds=MIN_LOAD_SECONDS, fraction=fraction)
    assert not problems, f"{problems}\n{result.summary()}"


def load_on(app: str, roots: Path, rate: int) -> LoadGenerator:
    name = NAMES[app]
    paths = {
        "typical": [ANSWERS["typical"][0], "/api/v1/utils/banner/"],
        "tiny": ["/", "/health"],
    }  # notes: the notes mix (reads and writes PostgreSQL)
    return LoadGenerator(
        f"https://{name}", rate=rate, cafile=roots, resolve={name: LB_IP}, timeout=2.0,
        max_connections=rate * 2 + 10, paths=paths.get(app, ()),
    )  # fmt: skip


def test_a_rolling_upgrade_of_one_app_under_load_drops_nothing_and_restarts_no_other(
    tmp_path: Path, pebble_roots: Path, capacity: Capacity
) -> None:
    # A new release of typical: the project as it is, its version bumped.
    source = tmp_path / "typical"
    skip = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    shutil.copytree(ROOT / "tests/fixtures/typical", source, ignore=skip)
    pyproject = source / "pyproject.toml"
    text = pyproject.read_text()
    version = re.search(r'^version = "([^"]+)"', text, re.M)
    assert version is not None
    new_version = version[1] + ".1"
    pyproject.write_text(text.replace(version[0], f'version = "{new_version}"'))

    before = {(h, a): started(h, a) for h in APP_HOSTS for a in NAMES}
    loads = {
        app: load_on(app, pebble_roots, capacity.rate(ROLLOUT_FRACTION * share))
        for app, share in SHARES.items()
    }
    for gen in loads.values():
        gen.start()
    try:
        for gen in loads.values():
            gen.wait_for(50, timeout=30)  # steady traffic on every app before anything starts
        run = run_playbook(
            "rolling_upgrade.yml",
            extra={"fastapi_metal_app": "typical", "fastapi_app_source": str(source)},
        )
        hold(loads, MIN_LOAD_SECONDS)
    finally:
        results: dict[str, LoadResult | None] = {app: gen.stop() for app, gen in loads.items()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    for app, result in results.items():
        assert result is not None
        result.write_json(RESULTS / f"apps-upgrade-typical-load-{app}.json")
        print(f"\n--- load on {app} during typical's rolling upgrade ---\n{result.summary()}")
    assert run.rc == 0, run.tail()
    print(f"rolling upgrade of typical: {run.seconds:.1f} s")
    after = {(h, a): started(h, a) for h in APP_HOSTS for a in NAMES}
    for host in APP_HOSTS:
        assert new_version in release_of(host, "typical"), release_of(host, "typical")
        assert after[(host, "typical")] != before[(host, "typical")], (
            f"typical not restarted on {host}"
        )
        for other in ("notes", "tiny"):
            assert after[(host, other)] == before[(host, other)], f"{other} restarted on {host}"
    for app, result in results.items():
        assert result is not None
        verdict(result, capacity, ROLLOUT_FRACTION * SHARES[app])


def test_a_rollback_of_one_app_under_load_restores_it_alone(
    pebble_roots: Path, capacity: Capacity
) -> None:
    """Back from the upgrade above: typical returns to the release (and configuration) it ran
    before, on every host; notes and tiny are not restarted."""
    upgraded = {host: release_of(host, "typical") for host in APP_HOSTS}
    assert all(".1-" in release for release in upgraded.values()), upgraded  # the bumped one
    before = {(h, a): started(h, a) for h in APP_HOSTS for a in NAMES}
    gen = load_on("typical", pebble_roots, capacity.rate(ROLLOUT_FRACTION))
    with gen:
        gen.wait_for(50, timeout=30)
        run = run_playbook("rollback.yml", extra={"fastapi_metal_app": "typical"})
        hold({"typical": gen}, MIN_LOAD_SECONDS)
    result = gen.result
    result.write_json(RESULTS / "apps-rollback-typical-load.json")
    print(f"\n--- load on typical during its rollback ---\n{result.summary()}")
    assert run.rc == 0, run.tail()
    after = {(h, a): started(h, a) for h in APP_HOSTS for a in NAMES}
    for host in APP_HOSTS:
        release = release_of(host, "typical")
        assert release != upgraded[host] and ".1-" not in release, release
        assert after[(host, "typical")] != before[(host, "typical")], (
            f"typical not restarted on {host}"
        )
        for other in ("notes", "tiny"):
            assert after[(host, other)] == before[(host, other)], f"{other} restarted on {host}"
    verdict(result, capacity, ROLLOUT_FRACTION)


def test_a_converge_that_changes_one_apps_settings_restarts_that_app_alone(
    pebble_roots: Path,
) -> None:
    """site.yml runs every app through the same plays, one after the other: a setting of
    typical changed (its env) restarts typical on every host and neither notes nor tiny,
    whose runs share the hosts and plays; the next converge puts it back the same way."""
    banner = "converge-" + str(int(time.time()))
    changed = [
        {**app, "fastapi_app_env": {**app.get("fastapi_app_env", {}), "BANNER": banner}}
        if app["fastapi_app_name"] == "typical" else app
        for app in LAB_VARS["fastapi_metal_apps"]
    ]  # fmt: skip

    def banner_served() -> str:
        out = https(NAMES["typical"], "/api/v1/utils/banner/", pebble_roots)
        return str(json.loads(out.stdout)["banner"])

    for extra in ({"fastapi_metal_apps": changed}, None):
        before = {(h, a): started(h, a) for h in APP_HOSTS for a in NAMES}
        run = run_playbook("site.yml", extra=extra)
        assert run.rc == 0, run.tail()
        after = {(h, a): started(h, a) for h in APP_HOSTS for a in NAMES}
        for host in APP_HOSTS:
            assert after[(host, "typical")] != before[(host, "typical")], f"typical on {host}"
            for other in ("notes", "tiny"):
                assert after[(host, other)] == before[(host, other)], f"{other} restarted on {host}"
        assert (banner_served() == banner) == (extra is not None)
