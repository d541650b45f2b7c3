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
from tests.lab.topology import ADDRESSES, APP_HOSTS

PLAY = """
- hosts: lb1,app1,db1
  gather_facts: false
  connection: local
  # The roles' defaults and vars, at their own precedence (under the inventory's); with
  # --tags render --skip-tags always none of their tasks runs.
  roles: [base, postgresql, nginx, fastapi_app]
  tasks:
    - name: Show what the defaults derive
      tags: [render]
      ansible.builtin.debug:
        msg:
          upstream_servers: "{{ nginx_upstream_servers }}"
          drained_as: "{{ __fastapi_app_upstream | trim }}"
          firewall_ports: "{{ base_firewall_rules | map(attribute='port', default=0) | list }}"
          hba_sources: "{{ postgresql_hba_sources }}"
          forwarded: "{{ fastapi_app_forwarded_allow_ips }}"
          database_url: "{{ fastapi_app_secret_env.DATABASE_URL | default('') }}"
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


@pytest.mark.parametrize(
    ("extra", "app_port", "pg_port"),
    [((), 8000, 5432), (("-e", "fastapi_app_port=9000", "-e", "postgresql_port=5433"), 9000, 5433)],
    ids=["defaults", "ports-set-once"],
)
def test_every_place_follows_the_one_port(
    tmp_path: Path, extra: tuple[str, ...], app_port: int, pg_port: int
) -> None:
    seen = render(tmp_path, *extra)
    upstream = [f"{address}:{app_port}" for address in APP_HOSTS.values()]
    assert seen["lb1"]["upstream_servers"] == upstream
    assert seen["app1"]["drained_as"] == upstream[0]  # the drain names what nginx lists
    assert seen["app1"]["firewall_ports"] == [app_port]
    assert seen["db1"]["firewall_ports"] == [pg_port]
    assert seen["app1"]["database_url"].endswith(f"@{ADDRESSES['db1']}:{pg_port}/notes")
    assert seen["db1"]["hba_sources"] == list(APP_HOSTS.values())
    assert seen["app1"]["forwarded"] == [ADDRESSES["lb1"]]


def test_an_ipv6_app_address_is_bracketed_alike_by_nginx_and_the_drain(tmp_path: Path) -> None:
    seen = render(tmp_path, "-e", json.dumps({"fastapi_app_bind_address": "fd00::31"}))
    assert seen["lb1"]["upstream_servers"][0] == "[fd00::31]:8000"
    assert seen["app1"]["drained_as"] == "[fd00::31]:8000"
