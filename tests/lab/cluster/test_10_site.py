"""site.yml on the lab: every host serves, the edge serves HTTPS, a rerun changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

from tests.lab.ansible_run import lab_exec, run_playbook
from tests.lab.cluster.conftest import APP_HOSTS, edge, edge_json

LAB_DB_PASSWORD = "lab-db-pass-1"  # inventories/lab/group_vars/all.yml


def test_every_app_host_is_healthy_with_the_same_release() -> None:
    releases = set()
    for name, ip in APP_HOSTS.items():
        # Only the lb hosts may reach the app port (the base role's firewall).
        out = lab_exec("lb1", f"curl -s -m 3 http://{ip}:8000/health")
        body = json.loads(out.stdout)
        assert body["status"] == "healthy", (name, body)
        current = lab_exec(name, "readlink /opt/notes/current").stdout.strip()
        assert body["release"] == current.rsplit("/", 1)[1]
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
        "curl -s -o /dev/null -w '%{http_code} %{redirect_url}' -H 'Host: app.lab.test' http://10.89.50.10/notes",
    )
    assert out.stdout == "301 https://app.lab.test/notes", out.stdout


def test_check_diff_changes_nothing_and_shows_no_secret() -> None:
    run = run_playbook("site.yml", "--check", "--diff")
    assert run.rc == 0, run.tail()
    assert run.recap and run.changed == 0, run.recap
    assert LAB_DB_PASSWORD not in run.output
    journal = lab_exec("app1", "journalctl -u notes --no-pager -o cat | tail -n 2000").stdout
    assert LAB_DB_PASSWORD not in journal
