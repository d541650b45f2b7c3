"""The secrets the lab's "no secret in the output or any log" tests look for come from the lab
inventory itself (tests/lab/topology.py: lab_secrets), so that a secret added to the inventory
is looked for without anyone listing it, and none of those listed today can drop out."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.lab.ansible_run import INVENTORY, VENV_BIN, ansible_env
from tests.lab.topology import lab_secrets, secret_values

# The lab's secrets as inventories/lab/group_vars/all.yml spells them: the two database
# passwords, the typical project's first user's password, the backups' passphrase. Spelt here,
# in the test, on purpose: what lab_secrets derives must hold each of them.
KNOWN = {
    "lab-db-pass-1",
    "lab-typical-db-pass-1",
    "lab-typical-first-1",
    "lab-only-repository-passphrase-1",
}


def test_the_needles_hold_every_secret_of_the_lab_inventory() -> None:
    needles = lab_secrets()
    missing = sorted(KNOWN - set(needles))
    assert not missing, f"not looked for: {missing}"
    # No needle is a name or a word the logs hold anyway (fastapi_app_database_env's
    # {POSTGRES_PASSWORD: password} names a field: it is not a secret).
    assert "password" not in needles, needles
    assert all(len(n) >= 8 and "{{" not in n for n in needles), needles


def test_the_needles_are_what_ansible_sees_for_every_host() -> None:
    """Ansible's own reading of the inventory (group_vars merged per host by
    ansible-inventory) yields the same secrets: no file of the inventory is left unread."""
    out = subprocess.run(
        [str(VENV_BIN / "ansible-inventory"), "-i", str(INVENTORY), "--list"],
        capture_output=True, text=True, check=True, env=ansible_env(),
    )  # fmt: skip
    hostvars = json.loads(out.stdout)["_meta"]["hostvars"]
    assert hostvars
    seen: set[str] = set()
    for variables in hostvars.values():
        seen |= secret_values(variables, variables)
    assert seen == set(lab_secrets())


def test_secrets_are_found_by_name_at_any_depth_with_references_resolved() -> None:
    variables = {
        "x_db_password": "pw-of-the-db-1",
        "plain": "not-a-secret-1",
        "some_api_TOKEN": "tok-0123456789",
        "repo_cipher_pass": "{{ x_db_password }}",
        "apps": [
            {
                "fastapi_app_database": {"password": "{{ other_secret }}", "port": 5432},
                "fastapi_app_secret_env": {"USER": "admin@x.test", "KEY": "{{ plain }}"},
                "fastapi_app_database_env": {"POSTGRES_PASSWORD": "password"},
                "fastapi_app_env": {"LEVEL": "INFO"},
            }
        ],
        "other_secret": "{{ deeper }}",
        "deeper": "deep-secret-1",
    }
    assert secret_values(variables, variables) == {
        "pw-of-the-db-1",
        "tok-0123456789",
        "deep-secret-1",  # through two references
        "admin@x.test",  # every value of a *_secret_env
        "not-a-secret-1",  # a secret env value, whatever the variable it came from is called
    }


@pytest.mark.parametrize(
    "variables",
    [
        {"db_password": "{{ lookup('file', 'x') }}"},  # not a plain reference
        {"db_password": "{{ undefined_variable }}"},
        {"db_password": "{{ db_password }}"},
        {"db_password": "short"},
        {"app_token": 1234567890},
    ],
    ids=["template", "undefined", "self-reference", "too-short", "not-a-string"],
)
def test_a_secret_the_scans_could_not_look_for_is_an_error(variables: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        secret_values(variables, variables)
