"""site.yml on the lab: every host serves, the edge serves HTTPS, a rerun changes nothing."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

from tests.helpers.logscan import LogSource, scan_for_secrets
from tests.lab.ansible_run import lab_exec, run_playbook
from tests.lab.cluster.conftest import edge, edge_json
from tests.lab.topology import APP_HOSTS, LAB_DB_PASSWORD, LB_IP

APP1_URL = f"http://{APP_HOSTS['app1']}:8000"


def test_every_app_host_is_healthy_with_the_same_release() -> None:
    releases = set()
    for name, ip in APP_HOSTS.items():
        # Only the lb hosts may reach the app port (the base role's firewall).
        out = lab_exec("lb1", f"curl -s -m 3 http://{ip}:8000/health")
        body = json.loads(out.stdout)
        assert body["status"] == "healthy", (name, body)
        current = lab_exec(name, "readlink -f /opt/notes/current/release").stdout.strip()
        assert body["release"] == current.rsplit("/", 1)[1]
        # Both come from the role: the id must also have the build's form, <version>-<key>.
        assert re.fullmatch(r"\d+\.\d+\.\d+-[0-9a-f]{10}", body["release"]), body
        releases.add(body["release"])
    assert len(releases) == 1, releases


def test_edge_serves_https_with_a_certificate_from_pebble(pebble_roots: Path) -> None:
    body = edge_json("/health/ready", pebble_roots)
    assert body["status"] == "ready" or body.get("database") == "ok", body
    # The chain verifies against pebble's root for the site's name (curl verified it).
    out = edge(
        "/health", pebble_roots, "-o", "/dev/null", "-w", "%{http_code} %{ssl_verify_result}"
    )
    assert out.stdout == "200 0", out


def test_http_redirects_to_https() -> None:
    out = lab_exec(
        "app1",
        "curl -s -o /dev/null -w '%{http_code} %{redirect_url}' -H 'Host: app.lab.test' "
        f"http://{LB_IP}/notes",
    )
    assert out.stdout == "301 https://app.lab.test/notes", out.stdout


def test_check_diff_changes_nothing() -> None:
    # A run that changes nothing prints no diff, so it cannot show a secret in one: that is
    # test_90_security's test_a_changed_secret_previewed_with_v_diff_shows_no_secret (a new
    # password, -v --diff). Here the output and the journal are still searched.
    run = run_playbook("site.yml", "--check", "--diff")
    assert run.rc == 0, run.tail()
    assert run.recap and run.changed == 0, run.recap
    assert LAB_DB_PASSWORD not in run.output
    # The app's journal, with a positive control: a request carrying a marker as its request
    # id, which the app logs (an empty or unread journal would hide any secret).
    marker = f"fm-logscan-{secrets.token_hex(8)}"
    lab_exec("lb1", f"curl -s -m 3 -o /dev/null -H 'X-Request-ID: {marker}' {APP1_URL}/health")
    source = LogSource("notes journal", command="journalctl -u notes --no-pager -o cat")
    problems = scan_for_secrets(
        lambda script: lab_exec("app1", script).stdout,
        [source],
        {source.name: marker},
        [LAB_DB_PASSWORD],
    )
    assert not problems, "\n".join(problems)
