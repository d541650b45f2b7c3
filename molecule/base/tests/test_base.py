"""The base role: app account, packages, time sync, somaxconn and the firewall by group."""

from __future__ import annotations

import pytest

from conftest import APP, LB, OTHER, get, journal, listening, probe


def test_systemd_is_pid_1_and_no_unit_failed(host):
    # The lab image under molecule (was the smoke scenario), after the role converged.
    assert host.process.get(pid=1).comm == "systemd"
    state = host.run("systemctl is-system-running").stdout.strip()
    if state != "running":
        failed = host.run("systemctl --failed --no-legend").stdout
        pytest.fail(f"systemd is {state}; failed units:\n{failed}")


def test_app_user_is_a_system_account_without_a_login_shell(host):
    user = host.user("app")
    assert user.exists
    assert user.uid < 1000
    assert user.group == "app"
    assert user.shell == "/usr/sbin/nologin"
    assert user.home == "/var/lib/app"
    home = host.file("/var/lib/app")
    assert home.is_directory
    assert (home.user, home.group, home.mode) == ("app", "app", 0o750)


@pytest.mark.parametrize(
    "package", ["acl", "ca-certificates", "curl", "nftables", "python3-venv", "systemd-timesyncd"]
)
def test_base_packages_are_installed(host, package):
    assert host.package(package).is_installed


def test_timesyncd_is_enabled(host):
    # In a container timesyncd's ConditionVirtualization keeps it stopped; on a server it runs.
    assert host.service("systemd-timesyncd").is_enabled


def test_somaxconn_is_at_least_4096_and_persisted(host):
    assert int(host.sysctl("net.core.somaxconn")) >= 4096
    conf = host.file("/etc/sysctl.d/60-fastapi-metal.conf")
    assert conf.mode == 0o644
    assert "net.core.somaxconn = 4096" in conf.content_string


def test_firewall_is_loaded_with_policy_drop(host):
    service = host.service("nftables")
    if not service.is_running:
        pytest.fail(journal(host, "nftables"))
    assert service.is_enabled
    assert host.run("nft -c -f /etc/nftables.conf").rc == 0
    table = host.check_output("nft list table inet fastapi_metal")
    assert "policy drop" in table
    assert 'iif "lo" accept' in table
    assert "tcp dport 22 accept" in table


def test_every_peer_name_resolves_to_its_address_inside_the_hosts(lb, app, other):
    """The lab's DNS (netavark + aardvark-dns): without it every probe below is meaningless."""
    names = [LB, APP, OTHER]
    addrs = {n: get(n).interface("eth0").addresses for n in names}
    for client in (lb, app, other):
        for name in names:
            got = client.run(f"getent ahostsv4 {name}")
            assert got.rc == 0, (
                f"{client.backend.hostname} cannot resolve {name}: lab DNS is broken"
            )
            assert got.stdout.split()[0] in addrs[name], (name, got.stdout, addrs[name])


def test_lb_exposes_only_http_https_and_ssh(lb, other, app):
    with listening(lb, 80, 443, 8000, 5432):
        seen = probe(other, f"{LB}:80", f"{LB}:443", f"{LB}:22", f"{LB}:8000", f"{LB}:5432")
        assert seen == {
            f"{LB}:80": "open",
            f"{LB}:443": "open",
            f"{LB}:22": "open",
            f"{LB}:8000": "timeout",
            f"{LB}:5432": "timeout",
        }
        # The app host is no exception for the lb's own non-public ports.
        assert probe(app, f"{LB}:22", f"{LB}:8000") == {f"{LB}:22": "open", f"{LB}:8000": "timeout"}


def test_app_port_is_open_to_lb_only(lb, other, app):
    with listening(app, 8000, 5432, 9000):
        from_lb = probe(lb, f"{APP}:8000", f"{APP}:5432", f"{APP}:9000")
        assert from_lb == {
            f"{APP}:8000": "open",
            f"{APP}:5432": "timeout",
            f"{APP}:9000": "timeout",
        }
        from_other = probe(other, f"{APP}:8000", f"{APP}:22")
        assert from_other == {f"{APP}:8000": "timeout", f"{APP}:22": "open"}
