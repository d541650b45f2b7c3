"""tests/lab/topology.py reads the lab inventory as Ansible does."""

from __future__ import annotations

import json
import subprocess

from tests.lab.ansible_run import INVENTORY, VENV_BIN, ansible_env
from tests.lab.topology import ADDRESSES, APP_HOSTS, DB_IP, LAB_DB_PASSWORD, LB_IP


def test_the_addresses_are_the_inventorys() -> None:
    out = subprocess.run(
        [str(VENV_BIN / "ansible-inventory"), "-i", str(INVENTORY), "--list"],
        capture_output=True, text=True, check=True, env=ansible_env(),
    )  # fmt: skip
    hostvars = json.loads(out.stdout)["_meta"]["hostvars"]
    assert {host: v["ansible_host"] for host, v in hostvars.items()} == ADDRESSES
    assert {"app1": ADDRESSES["app1"], "app2": ADDRESSES["app2"]} == APP_HOSTS
    assert (ADDRESSES["lb1"], ADDRESSES["db1"]) == (LB_IP, DB_IP)
    assert hostvars["db1"]["lab_db_password"] == LAB_DB_PASSWORD
