"""Each fact set once: the ports, group addresses and upstream strings the roles' defaults
derive, rendered by Ansible itself against the lab inventory on the controller (connection
local, nothing reaches a host). Changing fastapi_app_port or postgresql_port moves every
place that depends on it; the app hosts' drain string is the one nginx lists."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.lab.ansible_run import INVENTORY, ROOT, VENV_BIN, ansible_env
from tests.lab.topology import ADDRESSES, APP_HOSTS, LAB_VARS

LAB_APPS: list[dict[str, Any]] = LAB_VARS["fastapi_metal_apps"]

PLAY = """
- hosts: lb1,app1,db1
  gather_facts: false
  connection: local
  # The roles' defaults and vars, at their own precedence (under the inventory's); with
  # --tags render --skip-tags always none of their tasks runs. The app role sees each app of
  # fastapi_metal_apps as the playbooks pass it (fastapi_app_entry).
  roles: [base, postgresql, nginx, fastapi_app]
  tasks:
    - name: Show what the defaults derive
      tags: [render]
      ansible.builtin.debug:
        msg:
          sites: "{{ __nginx_sites | items2dict(key_name='name', value_name='servers') }}"
          drained_as: "{{ __fastapi_app_upstream | trim }}"
          firewall_rules: "{{ base_firewall_rules }}"
          databases: "{{ postgresql_databases | map(attribute='name') | list }}"
          hba_sources: "{{ postgresql_hba_sources }}"
          forwarded: "{{ fastapi_app_forwarded_allow_ips }}"
          database_url: "{{ __fastapi_app_environment.DATABASE_URL | default('') }}"
      vars:
        # The first app, as the playbooks pass an entry to the role (-e picks another).
        fastapi_app_entry: "{{ fastapi_metal_apps[0] }}"
"""


def render(tmp_path: Path, *extra: str) -> dict[str, dict[str, Any]]:
    play = tmp_path / "render.yml"
    play.write_text(PLAY)
    env = dict(ansible_env(), ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json")
    env["ANSIBLE_CALLBACKS_ENABLED"] = (
        "ansible.builtin.junit"  # not profile_tasks: no lines in the JSON
    )
    env["JUNIT_OUTPUT_DIR"] = str(tmp_path)
    out = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), str(play), "-i", str(INVENTORY),
         "--tags", "render", "--skip-tags", "always", *extra],
        capture_output=True, text=True, cwd=ROOT, env=env, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    results = json.loads(out.stdout)["plays"][0]["tasks"][0]["hosts"]
    return {host: result["msg"] for host, result in results.items()}


def firewall_ports(host: dict[str, Any], opened_to: str) -> list[int]:
    """The ports of the host's rules named "... from the OPENED_TO hosts"."""
    rules = [r for r in host["firewall_rules"] if r["name"].endswith(f"from the {opened_to} hosts")]
    return [int(p) for rule in rules for p in rule.get("ports", [rule.get("port")])]


def apps_with_ports(tmp_path: Path, ports: dict[str, int]) -> tuple[str, str]:
    """-e @file: the lab's fastapi_metal_apps with other ports (set once, in each entry)."""
    apps = [{**app, "fastapi_app_port": ports[app["fastapi_app_name"]]} for app in LAB_APPS]
    path = tmp_path / "apps.json"
    path.write_text(json.dumps({"fastapi_metal_apps": apps}))
    return "-e", f"@{path}"


LAB_PORTS = {app["fastapi_app_name"]: int(app["fastapi_app_port"]) for app in LAB_APPS}


@pytest.mark.parametrize(
    ("ports", "pg_port"),
    [(LAB_PORTS, 5432), ({"notes": 9000, "typical": 9001, "tiny": 9002}, 5433)],
    ids=["defaults", "ports-set-once"],
)
def test_every_place_follows_the_one_port(
    tmp_path: Path, ports: dict[str, int], pg_port: int
) -> None:
    extra = () if ports == LAB_PORTS else apps_with_ports(tmp_path, ports)
    seen = render(tmp_path, *extra, "-e", f"postgresql_port={pg_port}")
    # Each app: its site's upstream on the lb, and what its drain names app1 by.
    for app, port in ports.items():
        upstream = [f"{address}:{port}" for address in APP_HOSTS.values()]
        assert seen["lb1"]["sites"][app] == upstream, app
    assert sorted(firewall_ports(seen["app1"], "lb")) == sorted(ports.values())
    # Prometheus reads each app straight, with the node exporter's port besides.
    assert sorted(firewall_ports(seen["app1"], "monitoring")) == sorted([*ports.values(), 9100])
    assert firewall_ports(seen["db1"], "app") == [pg_port]
    # The first app's own database, at the db host's address and port; the databases follow
    # the apps that ask for one.
    assert seen["app1"]["database_url"].endswith(f"@{ADDRESSES['db1']}:{pg_port}/notes")
    assert seen["db1"]["databases"] == [
        app["fastapi_app_name"] for app in LAB_APPS if "fastapi_app_database" in app
    ]
    assert seen["db1"]["hba_sources"] == list(APP_HOSTS.values())
    assert seen["app1"]["forwarded"] == [ADDRESSES["lb1"]]


def test_the_drain_names_what_nginx_lists(tmp_path: Path) -> None:
    seen = render(tmp_path)
    for app in LAB_APPS:
        drained = render(tmp_path, "-e", json.dumps({"fastapi_app_entry": app}))["app1"]
        assert drained["drained_as"] == seen["lb1"]["sites"][app["fastapi_app_name"]][0]


def test_an_ipv6_app_address_is_bracketed_alike_by_nginx_and_the_drain(tmp_path: Path) -> None:
    seen = render(tmp_path, "-e", json.dumps({"fastapi_app_bind_address": "fd00::31"}))
    assert seen["lb1"]["sites"]["notes"][0] == "[fd00::31]:8000"
    assert seen["app1"]["drained_as"] == "[fd00::31]:8000"
