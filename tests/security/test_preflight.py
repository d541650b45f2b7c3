"""playbooks/preflight.yml on the controller, against the example production inventory
(inventories/production, documentation addresses): every bad inventory of the matrix fails in
preflight naming the variable and the expected form, before any connection; a good one gets
past it. ssh is replaced by a recorder, so nothing here can reach a host."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.lab.ansible_run import ROOT, ansible_env
from tests.security.preflight_cases import (
    CASES,
    PREFLIGHT,
    PRODUCTION,
    PRODUCTION_VAULT_PASS,
    VENV_BIN,
    Case,
    IsolatedRun,
    NoSshRunner,
    assert_stopped_in_preflight,
    preflight_task_names,
)

PRODUCTION_SECRET = "prod-example-Wb3kQ7rT9xLm2Vn"  # group_vars/all/vault.yml, decrypted


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> NoSshRunner:
    return NoSshRunner(tmp_path_factory.mktemp("nossh"), PRODUCTION, PRODUCTION_VAULT_PASS)


@pytest.fixture(scope="module")
def matrix(runner: NoSshRunner) -> dict[str, IsolatedRun]:
    return runner.run_cases(CASES)


def test_the_matrix_has_at_least_12_bad_inventories() -> None:
    assert len(CASES) >= 12
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_inventory_stops_in_preflight(case: Case, matrix: dict[str, IsolatedRun]) -> None:
    assert_stopped_in_preflight(matrix[case.id], case, secrets=[PRODUCTION_SECRET])


def test_the_production_example_passes_preflight_without_any_connection(
    runner: NoSshRunner,
) -> None:
    result = runner.run("preflight.yml")
    assert result.run.rc == 0, result.run.tail()
    assert result.ssh_attempts == []
    assert set(result.run.recap) == {"lb1", "app1", "app2", "db1", "mon1"}
    leaked = PRODUCTION_SECRET in result.run.output
    assert not leaked, "the vaulted secret is in the output"


def test_the_recorder_sees_a_connection_once_preflight_passes(runner: NoSshRunner) -> None:
    # The proof above means something only if an attempt would be seen: past preflight,
    # site.yml checks the deploy lock on the lock host (the first app host) alone, then
    # gathers facts on the others; each attempt lands in the recorder (unreachable).
    result = runner.run("site.yml")
    assert result.run.rc != 0
    hosts = {"192.0.2.10", "192.0.2.20", "192.0.2.31"}
    seen = {h for h in hosts for line in result.ssh_attempts if h in line.split()}
    assert seen == hosts, result.ssh_attempts
    unreachable = [host for host, r in result.run.recap.items() if r["unreachable"]]
    assert len(unreachable) >= 3, result.run.recap
    leaked = PRODUCTION_SECRET in result.run.output
    assert not leaked, "the vaulted secret is in the output"


@pytest.mark.parametrize("password", [None, "wrong"], ids=["no-password", "wrong-password"])
def test_a_locked_vault_stops_preflight_naming_the_vaulted_variable(
    tmp_path: Path, password: str | None
) -> None:
    pass_file = None
    if password:
        pass_file = tmp_path / "pass"
        pass_file.write_text(password + "\n")
    runner = NoSshRunner(tmp_path, PRODUCTION, pass_file)
    result = runner.run("site.yml")
    case = Case(
        "locked",
        ("the vault is locked", "vault_notes_db_password", "--vault-password-file"),
    )
    assert_stopped_in_preflight(result, case)


def test_the_vault_decrypts_with_the_example_password(runner: NoSshRunner) -> None:
    # An ad-hoc debug runs on the controller; the recorder stands in for ssh all the same.
    want = hashlib.sha256(PRODUCTION_SECRET.encode()).hexdigest()
    out = subprocess.run(
        [
            str(VENV_BIN / "ansible"),
            "db1",
            "-i",
            str(PRODUCTION),
            "--vault-password-file",
            str(PRODUCTION_VAULT_PASS),
            "-m",
            "ansible.builtin.debug",
            "-a",
            "msg={{ vault_notes_db_password | hash('sha256') }}",
        ],
        capture_output=True,
        text=True,
        env=dict(
            ansible_env(), ANSIBLE_SSH_EXECUTABLE=str(runner.fake_ssh), FAKE_SSH_LOG="/dev/null"
        ),
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert want in out.stdout
    # The file holds no plaintext.
    vault = (PRODUCTION / "group_vars" / "all" / "vault.yml").read_text()
    assert PRODUCTION_SECRET not in vault
    assert "$ANSIBLE_VAULT;1.1;AES256" in vault


@pytest.mark.parametrize("playbook", ["site.yml", "rolling_upgrade.yml", "rollback.yml"])
def test_every_playbook_starts_with_the_preflight_play(playbook: str) -> None:
    plays = yaml.safe_load((ROOT / "playbooks" / playbook).read_text())
    assert plays[0].get("ansible.builtin.import_playbook") == "preflight.yml", plays[0]


def test_every_preflight_task_runs_on_the_controller() -> None:
    (play,) = yaml.safe_load(PREFLIGHT.read_text())
    assert play["gather_facts"] is False
    assert play["any_errors_fatal"] is True
    for task in play["tasks"]:
        assert task.get("delegate_to") == "localhost", task["name"]
    assert preflight_task_names()
