"""Bad inventories against the lab (issue #7): every case of the matrix fails in the
controller-side preflight, naming the variable and the expected form, and no lab host is
touched. The runs cannot reach a host at all - ssh is replaced by a recorder that connects
nowhere - and the proof does not rest on that alone: each host's deployed state (releases,
links, config files and their mtimes, service start times) is the same after the matrix."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.lab.ansible_run import lab_exec
from tests.lab.topology import ADDRESSES, lab_secrets
from tests.security.preflight_cases import (
    APP_CASES,
    CASES,
    LAB,
    Case,
    IsolatedRun,
    NoSshRunner,
    assert_stopped_in_preflight,
    copied_inventory,
    one_app_inventory,
)

# What a run that got past preflight would change first, per host (podman exec, not ssh).
STATE = {
    "app1": "/opt/notes/releases /opt/notes/releases/* /opt/notes/deploys /opt/notes/deploys/* "
    "/opt/notes/deploys/*/* /opt/notes/current /opt/notes/previous "
    "/etc/systemd/system/notes.service /etc/systemd/system/notes.socket /etc/nftables.conf",
    "lb1": "/etc/nginx/nginx.conf /etc/nftables.conf /etc/letsencrypt/live",
    "db1": "/etc/postgresql/15/main/pg_hba.conf /etc/postgresql/15/main/conf.d/* "
    "/etc/nftables.conf",
    "mon1": "/etc/prometheus/prometheus.yml /etc/prometheus/alertmanager.yml "
    "/etc/prometheus/blackbox.yml /etc/prometheus/rules/* /etc/default/prometheus "
    "/etc/systemd/journal-remote.conf /etc/nftables.conf",
}
STATE["app2"] = STATE["app1"]
SERVICES = {
    "app1": "notes",
    "app2": "notes",
    "lb1": "nginx",
    "db1": "postgresql@15-main",
    "mon1": "prometheus",
}


def lab_state() -> dict[str, str]:
    state = {}
    for host, paths in STATE.items():
        out = lab_exec(
            host,
            f"stat -c '%n %y %s %a %U:%G %N' {paths} 2>&1; readlink /opt/notes/current 2>&1;"
            f" systemctl show {SERVICES[host]} -p ExecMainStartTimestamp -p ActiveState",
        )
        state[host] = out.stdout
    return state


@pytest.fixture(scope="module")
def before() -> dict[str, str]:
    state = lab_state()
    # The snapshot sees each host's real state (a snapshot of errors would compare equal):
    # its firewall file, and its service running since a known time.
    assert set(state) == set(ADDRESSES), f"hosts not snapshotted: {set(ADDRESSES) - set(state)}"
    for host, text in state.items():
        lines = text.splitlines()
        assert any(line.startswith("/etc/nftables.conf ") for line in lines), (host, text)
        assert "ActiveState=active" in lines, (host, text)
        assert any(re.fullmatch(r"ExecMainStartTimestamp=\S.*", line) for line in lines), text
    return state


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> NoSshRunner:
    return NoSshRunner(tmp_path_factory.mktemp("nossh"), LAB)


@pytest.fixture(scope="module")
def one_app_runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NoSshRunner]:
    """The matrix is written for an inventory of one app: the lab's first app, alone."""
    with copied_inventory(LAB) as scratch:
        inventory = one_app_inventory(scratch)
        yield NoSshRunner(tmp_path_factory.mktemp("nossh-one-app"), inventory)


@pytest.fixture(scope="module")
def matrix(
    before: dict[str, str], runner: NoSshRunner, one_app_runner: NoSshRunner
) -> dict[str, IsolatedRun]:
    results = one_app_runner.run_cases(CASES) | runner.run_cases(APP_CASES)
    total = sum(r.run.seconds for r in results.values())
    print(f"\n{len(results)} bad inventories, {total:.1f} s of ansible-playbook in all")
    return results


def test_the_matrix_has_at_least_12_bad_inventories() -> None:
    assert len(CASES) >= 12


@pytest.mark.parametrize("case", CASES + APP_CASES, ids=[c.id for c in CASES + APP_CASES])
def test_bad_inventory_fails_in_preflight(case: Case, matrix: dict[str, IsolatedRun]) -> None:
    result = matrix[case.id]
    print(f"{case.id}: rc={result.run.rc} in {result.run.seconds:.1f} s, recap {result.run.recap}")
    # Every secret of the lab inventory (tests/lab/topology.py), the typical app's too.
    assert_stopped_in_preflight(result, case, secrets=lab_secrets())


def test_no_lab_host_changed_during_the_matrix(
    before: dict[str, str], matrix: dict[str, IsolatedRun]
) -> None:
    assert matrix
    after = lab_state()
    for host in STATE:
        assert after[host] == before[host], f"{host} changed:\n{before[host]}\n---\n{after[host]}"


@pytest.mark.parametrize("form", ["three apps", "one app"])
def test_the_good_lab_inventory_gets_past_preflight_to_the_recorder(
    form: str, runner: NoSshRunner, one_app_runner: NoSshRunner
) -> None:
    # Without this, "no ssh attempt" could mean a recorder that sees nothing.
    result = (runner if form == "three apps" else one_app_runner).run("site.yml")
    assert result.run.rc != 0
    print(result.run.recap)
    # site.yml's first play after preflight checks the deploy lock on the lock host (app1)
    # alone; the hosts of the plays that follow are tried too.
    for ip in (ADDRESSES["lb1"], ADDRESSES["db1"], ADDRESSES["app1"]):
        assert any(ip in line.split() for line in result.ssh_attempts), (ip, result.ssh_attempts)
    unreachable = {host for host, r in result.run.recap.items() if r["unreachable"]}
    assert unreachable >= {"app1", "lb1", "db1"}, result.run.recap
